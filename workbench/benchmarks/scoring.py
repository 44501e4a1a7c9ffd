"""Answer scoring compatible with the published Visual-ARFT evaluation, and prediction files.

Owns: answer normalisation (plain, and MAT-Coding's with full-width punctuation
and the CJK character rule), per-item F1/EM, aggregation into all / simple /
hard / per-degradation-type figures, and reading + validating result files
(a JSON list, or JSON Lines, of {[id,] gt, pred_answer}, as the released files
write them: id optional, gold answers as gt / answers / answer).

Compatibility notes, checked against the reference result files (see
tests/test_scoring.py): token overlap counts *distinct* shared tokens (a set
intersection, as the published evaluator does; a multiset Counter gives
37.06 instead of 35.90 on MAT-Coding), and in MAT-Coding only the string that
itself contains CJK characters loses its spaces, while character tokens are
used when either side does.
"""

import re
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbench.records import describe_item, read_json_records

BENCHMARKS = ("mat-coding", "mat-search", "multihop")
# Leading items per split, by position in the file (PROTOCOL.md): (simple count, full size).
MAT_SPLITS = {"mat-coding": (70, 200), "mat-search": (75, 150)}
SPLITS = ("simple", "hard")
FULLWIDTH_PUNCTUATION = "！？｡＂＃＄％＆＇（）＊＋，－．／：；＜＝＞＠［＼］＾＿｀｛｜｝～“”‘’、。：《》【】"

_PLAIN_PUNCT = str.maketrans("", "", string.punctuation)
_CODING_PUNCT = str.maketrans("", "", string.punctuation + FULLWIDTH_PUNCTUATION)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_CJK = re.compile("[\u4e00-\u9fff]")


class PredictionFileError(ValueError):
    """A prediction/result file or list that cannot be scored; the message names the item."""


def check_benchmark(benchmark: str) -> str:
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; use one of {', '.join(BENCHMARKS)}")
    return benchmark


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


def normalize_answer(text: str, benchmark: str = "multihop") -> str:
    """Lower-case, drop punctuation and articles, collapse white space.

    For mat-coding, full-width punctuation goes too, and a string containing
    CJK characters only loses its spaces (articles are kept, newlines stay).

    >>> normalize_answer("The  Eiffel-Tower!")
    'eiffeltower'
    >>> normalize_answer("发票号码： 1673 4841", "mat-coding")
    '发票号码16734841'
    """
    if benchmark == "mat-coding":
        text = text.lower().translate(_CODING_PUNCT)
        if has_cjk(text):
            return text.replace(" ", "")
    else:
        text = text.lower().translate(_PLAIN_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _overlap_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    same = len(set(pred_tokens) & set(gold_tokens))  # distinct shared tokens, as published
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _score_normalized(pred: str, golds: list[str], cjk_rule: bool) -> tuple[float, float]:
    """F1/EM of a normalised prediction against normalised golds (max over golds)."""
    best_f1, em = 0.0, 0.0
    pred_cjk = cjk_rule and has_cjk(pred)
    word_tokens = None
    for gold in golds:
        if pred == gold:
            return 1.0, 1.0  # EM = 1 forces F1 = 1
        if pred_cjk or (cjk_rule and has_cjk(gold)):
            f1 = _overlap_f1(list(pred), list(gold))
        else:
            if word_tokens is None:
                word_tokens = pred.split()
            f1 = _overlap_f1(word_tokens, gold.split())
        best_f1 = max(best_f1, f1)
    return best_f1, em


def f1_em(pred: str | None, golds: str | list[str], benchmark: str = "multihop") -> tuple[float, float]:
    """Token F1 and exact match (0..1), each the max over the gold answers.

    >>> f1_em("the Rijksmuseum in Amsterdam", ["Rijksmuseum", "Amsterdam"])
    (0.5, 0.0)
    >>> f1_em("Uncommon Valor.", "uncommon valor")
    (1.0, 1.0)
    >>> f1_em(None, ["x"])
    (0.0, 0.0)
    >>> round(f1_em("发票号码16734841", "发票号码: 16734841", "mat-coding")[0], 3)
    1.0
    """
    if pred is None:
        return 0.0, 0.0
    gold_list = [golds] if isinstance(golds, str) else list(golds)
    normalized = [normalize_answer(g, benchmark) for g in gold_list]
    return _score_normalized(normalize_answer(pred, benchmark), normalized, benchmark == "mat-coding")


# ----------------------------------------------------------------------------------------------
# Validation of prediction items


GOLD_KEYS = ("gt", "answers", "answer")  # the released files say gt; MAT benchmark items say answers / answer


def _gold_key(item: dict) -> str | None:
    return next((key for key in GOLD_KEYS if key in item), None)


def validate_predictions(items: Any, source: str = "predictions") -> list[dict]:
    """Check result items and return them in one shape: {id, gt, pred_answer, **every other key}.

    As the released result files are written: `id` is optional (an item
    without one is known by its 0-based position in the file, as the paper's
    scorer knows every item); the gold answers are `gt`, `answers` or
    `answer` (the first present), a string or a list of strings, and become a
    list; any other key is kept. Raises PredictionFileError naming the first
    bad item.

    >>> validate_predictions([{"pred_answer": "x", "answer": "X", "query": "q?"}])
    [{'id': 0, 'gt': ['X'], 'pred_answer': 'x', 'query': 'q?'}]
    """
    if not isinstance(items, list):
        raise PredictionFileError(f"{source}: expected a JSON list of {{gt, pred_answer}} objects (id optional), "
                                  f"got {type(items).__name__}")
    seen: dict[str, int] = {}
    canonical = []
    for position, item in enumerate(items):
        where = f"{source}: {describe_item(position, item)}"
        if not isinstance(item, dict):
            raise PredictionFileError(f"{where}: expected an object with gt and pred_answer (id optional); "
                                      f"got {type(item).__name__}")
        gold_key = _gold_key(item)
        missing = (["gt (or answers / answer)"] if gold_key is None else []) + \
            (["pred_answer"] if "pred_answer" not in item else [])
        if missing:
            raise PredictionFileError(f"{where}: missing field(s) {', '.join(missing)}")
        item_id = item.get("id", position)
        if isinstance(item_id, bool) or not isinstance(item_id, (str, int)):
            raise PredictionFileError(f"{where}: 'id' must be a string or an integer, "
                                      f"got {type(item_id).__name__}")
        key = str(item_id)
        if key in seen:
            if "id" in item:
                raise PredictionFileError(f"{where}: duplicate id {item_id!r} (first seen at item {seen[key]})")
            raise PredictionFileError(f"{where}: has no id, and its position {position} is also the id of item "
                                      f"{seen[key]}; give every item a unique id, or none")
        seen[key] = position
        gold = item[gold_key]
        if isinstance(gold, list):
            if not gold:
                raise PredictionFileError(f"{where}: '{gold_key}' is an empty list; give at least one gold answer")
            bad = [g for g in gold if not isinstance(g, str)]
            if bad:
                raise PredictionFileError(f"{where}: '{gold_key}' must hold strings, found {type(bad[0]).__name__}")
        elif not isinstance(gold, str):
            raise PredictionFileError(f"{where}: '{gold_key}' must be a string or a list of strings, "
                                      f"got {type(gold).__name__}")
        pred = item["pred_answer"]
        if pred is not None and not isinstance(pred, str):
            raise PredictionFileError(f"{where}: 'pred_answer' must be a string or null, "
                                      f"got {type(pred).__name__}")
        others = {k: v for k, v in item.items() if k not in ("id", gold_key, "pred_answer")}
        canonical.append({"id": item_id, "gt": gold if isinstance(gold, list) else [gold], "pred_answer": pred,
                          **others})
    return canonical


def positional_id_note(items: list) -> str | None:
    """The report's note when items have no id (None when every item has one)."""
    count = sum(1 for item in items if isinstance(item, dict) and "id" not in item)
    if not count:
        return None
    which = "no item has" if count == len(items) else f"{count} of {len(items)} items have no"
    return f"{which} id; such an item is known by its 0-based position in the file"


def load_predictions(path: str | Path) -> list[dict]:
    """Read and check a result file: a JSON list (or JSON Lines) of {[id,] gt, pred_answer[, ...]}, as written.

    The items come back as the file has them (`score_predictions` puts them
    in one shape and notes items known by position).
    """
    records = read_json_records(path, PredictionFileError)
    if isinstance(records, list) and not records:
        raise PredictionFileError(f"{path}: the file holds no predictions")
    validate_predictions(records, source=str(path))
    return records


# ----------------------------------------------------------------------------------------------
# Aggregation


@dataclass
class ItemScore:
    """One scored prediction; f1/em are 0..1."""

    id: Any
    position: int
    f1: float
    em: float
    split: str | None = None
    types: list[str] = field(default_factory=list)


@dataclass
class GroupScore:
    """Mean F1/EM (percent) over a group of items."""

    n: int
    f1: float
    em: float


@dataclass
class ScoreReport:
    """Scores of a prediction list; figures are percentages (0..100), unrounded."""

    benchmark: str
    n: int
    all_f1: float
    all_em: float
    simple_f1: float | None = None
    simple_em: float | None = None
    hard_f1: float | None = None
    hard_em: float | None = None
    per_type: dict[str, GroupScore] = field(default_factory=dict)
    per_item: list[ItemScore] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the figures are not comparable with published ones
    notes: list[str] = field(default_factory=list)  # how the file was read (e.g. items known by position)

    def to_json(self) -> dict[str, float | int]:
        """The summary as a JSON-ready dict: n, all_f1, all_em (+ simple_*, hard_* for MAT), 2 decimals."""
        keys = ["all_f1", "all_em"]
        if self.benchmark in MAT_SPLITS:
            keys += ["simple_f1", "simple_em", "hard_f1", "hard_em"]
        summary: dict[str, float | int] = {"n": self.n}
        summary.update({key: round(getattr(self, key), 2) for key in keys})
        return summary

    def to_dict(self) -> dict[str, Any]:
        """Everything, for storing with a run."""
        return asdict(self)


def _mean_percent(values: list[float]) -> float:
    return 100.0 * sum(values) / len(values) if values else 0.0


def _item_types(item: dict, ref: Any) -> list[str]:
    if ref is not None and getattr(ref, "types", None):
        return list(ref.types)
    for key in ("types", "type"):
        value = item.get(key)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return []


def _item_split(item: dict, position: int, benchmark: str, ref: Any) -> str | None:
    if benchmark not in MAT_SPLITS:
        return None
    split = getattr(ref, "split", None) if ref is not None else item.get("split")
    if split in SPLITS:
        return split
    return "simple" if position < MAT_SPLITS[benchmark][0] else "hard"


def score_predictions(items: list[dict], benchmark: str, reference: list[Any] | None = None) -> ScoreReport:
    """Score {id, gt, pred_answer} items the way the published evaluation does.

    Items are as the result files have them (see `validate_predictions`).
    `reference` (e.g. BenchmarkItem objects with id, split, types) supplies
    splits and degradation types by id (by position for an item without an
    id); otherwise an item's own `split` / `type` fields are used, and MAT
    splits fall back to position in the list.

    >>> report = score_predictions([{"id": 1, "gt": ["Yes"], "pred_answer": "yes"},
    ...                             {"id": 2, "gt": "Paris", "pred_answer": None}], "multihop")
    >>> report.to_json()
    {'n': 2, 'all_f1': 50.0, 'all_em': 50.0}
    """
    check_benchmark(benchmark)
    canonical = validate_predictions(items)
    reference = list(reference or [])
    by_id = {str(ref.id): ref for ref in reference}
    cjk_rule = benchmark == "mat-coding"
    per_item = []
    for position, (raw, item) in enumerate(zip(items, canonical)):
        if "id" in raw:
            ref = by_id.get(str(item["id"]))
        else:
            ref = reference[position] if position < len(reference) else None
        golds = item["gt"]
        pred = item["pred_answer"]
        if pred is None:
            f1, em = 0.0, 0.0
        else:
            f1, em = _score_normalized(normalize_answer(pred, benchmark),
                                       [normalize_answer(g, benchmark) for g in golds], cjk_rule)
        per_item.append(ItemScore(item["id"], position, f1, em, _item_split(item, position, benchmark, ref),
                                  _item_types(item, ref) if cjk_rule else []))
    report = ScoreReport(benchmark, len(per_item), _mean_percent([s.f1 for s in per_item]),
                         _mean_percent([s.em for s in per_item]), per_item=per_item)
    if note := positional_id_note(items):
        report.notes.append(note)
    if benchmark in MAT_SPLITS:
        for split in SPLITS:
            chosen = [s for s in per_item if s.split == split]
            setattr(report, f"{split}_f1", _mean_percent([s.f1 for s in chosen]))
            setattr(report, f"{split}_em", _mean_percent([s.em for s in chosen]))
        expected = MAT_SPLITS[benchmark][1]
        if report.n != expected:
            report.warnings.append(f"{benchmark} has {expected} items; this list has {report.n}, so the "
                                   f"figures are not comparable with published ones")
    types = sorted({label for s in per_item for label in s.types})
    for label in types:
        chosen = [s for s in per_item if label in s.types]
        report.per_type[label] = GroupScore(len(chosen), _mean_percent([s.f1 for s in chosen]),
                                            _mean_percent([s.em for s in chosen]))
    return report
