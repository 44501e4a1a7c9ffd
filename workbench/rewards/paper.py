"""The `paper` reward preset: the values the released Visual-ARFT GRPO reward code gives, case for case.

The released training scripts (one for coding rows, one for search rows)
each register two TRL rewards, `format` and `accuracy`; their values made the
paper's checkpoints. Where that code and the paper's text disagree, this
preset follows the code (see ../shared/PROTOCOL.md, "What the released
reward code does"):

- format: the completion must be, from its first to its last character,
  `<think>..</think>`, optional white space, then one action of the kind the
  row's `solution` names (coding rows), or of either kind (search rows); a
  second `<think>`/action tag scores 0, so does leading or trailing space;
- accuracy, coding rows: answer F1 on the plain normalisation against the
  `solution`'s answer only (`gt` is not read; no `<answer>` tag: the whole
  completion is scored); 0.9 for any completion on a code step without
  `<answer>`/`<problem>`; problem labels read from single-quoted set syntax
  only, 0.5 for naming only the rotation of a rotation pair;
- accuracy, search rows: 1.0 when math-verify (the `math-verify` package, as
  the released code) finds the completion and the solution symbolically
  equal; else answer F1, or the all-MiniLM-L6-v2 cosine of the queries
  (below 0.5 counts 0; no `<search>` tag: the whole completion is embedded).

A row is a coding row when its `kind` column says "code" or its `type` is a
coding step (pre_problem / pre_code / pre_answer); otherwise a search row,
as the search training file has no `type`. Completions are strings or chat
message lists (the first message's text is judged, as the released code
judges `completion[0]["content"]`).
"""

import re
import string
import threading
from typing import Any

from workbench.rewards.text import column, load_similarity_model

CODE_STEP_TYPES = ("pre_problem", "pre_code", "pre_answer")
KINDS = ("code", "search")
CODE_STEP_VALUE = 0.9
SEARCH_THRESHOLD = 0.5

_ASCII_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_THOUGHT = r"<think>.*</think>\s*"  # whole-string matches: greedy or lazy accept the same strings
_ANSWER = re.compile(_THOUGHT + r"<answer>.*</answer>", re.S)
_SEARCH = re.compile(_THOUGHT + r"<search>.*</search>", re.S)
_CODE = re.compile(_THOUGHT + r"<code>\s*```python.*```.*</code>", re.S)
_QUOTED_LABEL = r"\s*'[^']+'\s*"
_PROBLEM = re.compile(_THOUGHT + rf"<problem>\s*\{{{_QUOTED_LABEL}(?:,{_QUOTED_LABEL})*\}}\s*</problem>", re.S)
_PROBLEM_SET = re.compile(r"<problem>\s*\{(.*?)\}\s*</problem>", re.S)
_SINGLE_QUOTED = re.compile(r"'([^']+)'")


def completion_text(completion: Any) -> str:
    """The text the released code judges: a string as is, else the first message's content.

    >>> completion_text([{"role": "assistant", "content": "<think>a</think>"}, {"role": "user", "content": "x"}])
    '<think>a</think>'
    """
    if isinstance(completion, str):
        return completion
    message = completion[0] if isinstance(completion, list) and completion else completion
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        content = "".join(block.get("text") or "" for block in content if isinstance(block, dict))
    return content if isinstance(content, str) else ""


def row_kinds(n: int, kwargs: dict) -> list[str]:
    """Per row, "code" or "search": the `kind` column, else a coding `type`, else search (the search file).

    >>> row_kinds(3, {"type": ["pre_code", None, "pre_search"]})
    ['code', 'search', 'search']
    """
    kinds, types = column(kwargs, "kind", n), column(kwargs, "type", n)
    found = []
    for i in range(n):
        kind = kinds[i] if kinds else None
        if kind is None:
            kind = "code" if types and types[i] in CODE_STEP_TYPES else "search"
        if kind not in KINDS:
            raise ValueError(f"row {i}: kind {kind!r} is unknown; use code or search")
        found.append(kind)
    return found


def normalize(text: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse white space (no CJK rule).

    >>> normalize("The Rijksmuseum, Amsterdam！")
    'rijksmuseum amsterdam！'
    """
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_ASCII_PUNCTUATION)).split())


def token_f1(prediction: str, gold: str) -> float:
    """F1 of the distinct shared tokens after `normalize`.

    >>> token_f1("the answer is 81", "81"), round(token_f1("广安枢纽站", "{'始发站': '广安枢纽站'}"), 3)
    (0.5, 0.667)
    """
    predicted, expected = normalize(prediction).split(), normalize(gold).split()
    same = len(set(predicted) & set(expected))
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return 2 * precision * recall / (precision + recall)


def tag_body(text: str, tag: str) -> str | None:
    """The first `<tag>..</tag>` body that stays on one line, stripped; None if there is none."""
    match = re.search(rf"<{tag}>(.*?)</{tag}>", text)
    return match.group(1).strip() if match else None


def _body_or_all(text: str, tag: str) -> str:
    body = tag_body(text, tag)
    return body if body is not None else text.strip()


def problem_labels(text: str) -> list[str]:
    """Single-quoted labels inside the first `<problem>{..}</problem>`, sorted (repeats kept).

    >>> problem_labels("<problem> {'rotation90', 'dark'} </problem>"), problem_labels('<problem> {"dark"} </problem>')
    (['dark', 'rotation90'], [])
    """
    match = _PROBLEM_SET.search(text)
    return sorted(_SINGLE_QUOTED.findall(match.group(1))) if match else []


def _problem_score(predicted: list[str], gold: list[str]) -> float:
    for rotation in ("rotation90", "rotation180"):
        if len(gold) == 2 and rotation in gold:
            if len(predicted) == 1 and rotation in predicted:
                return 0.5
            break  # the released code checks the second rotation only when the first is absent
    return 1.0 if predicted == gold else 0.0


def _code_accuracy(content: str, solution: str) -> float:
    if "<answer>" in solution:
        if "<code>" in content or "<problem>" in content:
            return 0.0
        return token_f1(_body_or_all(content, "answer"), _body_or_all(solution, "answer"))
    if "<code>" in solution:
        return 0.0 if "<answer>" in content or "<problem>" in content else CODE_STEP_VALUE
    if "<problem>" in solution:
        if "<answer>" in content or "<code>" in content:
            return 0.0
        return _problem_score(problem_labels(content), problem_labels(solution))
    return 0.0


def symbolic_match(content: str, solution: str) -> bool:
    """math-verify's verdict on the two texts, as the released search reward asks it first.

    Its parsing timeouts use SIGALRM, which only the main thread may set; off
    the main thread the check runs without them.
    """
    from math_verify import parse, verify

    main = threading.current_thread() is threading.main_thread()
    timeouts = {} if main else {"parsing_timeout": None}
    try:
        verdict = verify(parse(content, **timeouts), parse(solution, **timeouts),
                         **({} if main else {"timeout_seconds": None}))
        return float(verdict) > 0
    except Exception:  # the released code treats any failure here as "no symbolic match"
        return False


def query_cosine(predicted: str, reference: str) -> float:
    """Cosine similarity of the two texts' all-MiniLM-L6-v2 embeddings, each encoded on its own."""
    from sentence_transformers import util

    model = load_similarity_model()
    first = model.encode(predicted, convert_to_tensor=True, show_progress_bar=False)
    second = model.encode(reference, convert_to_tensor=True, show_progress_bar=False)
    return float(util.cos_sim(first, second))


def _search_accuracy(content: str, solution: str) -> float:
    if symbolic_match(content, solution):
        return 1.0
    if "<answer>" in solution:
        if "<search>" in content:
            return 0.0
        return token_f1(_body_or_all(content, "answer"), _body_or_all(solution, "answer"))
    if "<search>" in solution:
        if "<answer>" in content:
            return 0.0
        similarity = query_cosine(_body_or_all(content, "search"), _body_or_all(solution, "search"))
        return 0.0 if similarity < SEARCH_THRESHOLD else similarity
    return 0.0


def accuracy_reward(completions: list, **kwargs: Any) -> list[float]:
    """The released accuracy reward, against the `solution` column (coding or search rules per row).

    >>> accuracy_reward(["<think> t </think>\\n<answer> ok </answer>", "the answer is 81",
    ...                  "<think> t </think>\\nI would rotate it."],
    ...                 solution=["<answer> 81 </answer>"] * 2 + ["<code>\\n```python\\nx=1\\n```\\n</code>"],
    ...                 type=["pre_answer", "pre_answer", "pre_code"])
    [0.0, 0.5, 0.9]
    """
    n = len(completions)
    solutions = column(kwargs, "solution", n) or [None] * n
    scores = []
    for completion, solution, kind in zip(completions, solutions, row_kinds(n, kwargs)):
        if not isinstance(solution, str):
            scores.append(0.0)
            continue
        content = completion_text(completion)
        scores.append(_code_accuracy(content, solution) if kind == "code" else _search_accuracy(content, solution))
    return scores


def _code_format(content: str, solution: str) -> bool:
    if any(content.count(tag) >= 2 for tag in ("<answer>", "<code>", "<think>", "<problem>")):
        return False
    for tag, pattern in (("<answer>", _ANSWER), ("<code>", _CODE), ("<problem>", _PROBLEM)):
        if tag in solution:
            return pattern.fullmatch(content) is not None
    return False


def _search_format(content: str) -> bool:
    if any(content.count(tag) >= 2 for tag in ("<answer>", "<search>", "<think>")):
        return False
    if "<answer>" in content and "</answer>" in content:
        return _ANSWER.fullmatch(content) is not None
    if "<search>" in content and "</search>" in content:
        return _SEARCH.fullmatch(content) is not None
    return False


def format_reward(completions: list, **kwargs: Any) -> list[float]:
    """The released format reward: 1.0 when the whole completion has the expected shape, else 0.0.

    >>> format_reward(["<think> t </think>\\n<answer> 81 </answer>", "<think> t </think>\\n<answer> 81 </answer>\\n",
    ...                "<think> t </think>\\n<answer> Rijksmuseum </answer>"],
    ...               solution=["<answer> 81 </answer>"] * 2 + ["<search> museum </search>"],
    ...               kind=["code", "code", "search"])
    [1.0, 0.0, 1.0]
    """
    n = len(completions)
    solutions = column(kwargs, "solution", n) or [None] * n
    scores = []
    for completion, solution, kind in zip(completions, solutions, row_kinds(n, kwargs)):
        content = completion_text(completion)
        if kind == "code":
            ok = isinstance(solution, str) and _code_format(content, solution)
        else:
            ok = _search_format(content)
        scores.append(1.0 if ok else 0.0)
    return scores
