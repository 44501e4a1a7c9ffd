"""Benchmark loaders: MAT-Coding, MAT-Search and plain multi-hop QA files -> `BenchmarkItem`s.

Owns the field mapping of each format (PROTOCOL.md "Data formats"), the
MAT-Coding rule that `crop` items show the original image (all others the
processed one), resolving image paths against an images folder (falling
back to the bare file name, since released files may carry the authors'
absolute or nested paths), the simple/hard split (an item's own `split`,
else its position), and clear errors that name the offending item.
Scoring lives in workbench/benchmarks/scoring.py.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.benchmarks.scoring import MAT_SPLITS, SPLITS
from workbench.records import read_json_records

BENCHMARK_FORMATS = ("mat-coding", "mat-search", "multihop")


class BenchmarkFileError(ValueError):
    """A benchmark file that cannot be used; the message names the item and field."""


@dataclass
class BenchmarkItem:
    """One question of any benchmark, in the workbench's common shape."""

    id: str
    question: str
    answers: list[str]
    image: Path | None = None
    clean_image: Path | None = None  # undegraded reference (MAT-Coding), when the file exists
    types: list[str] = field(default_factory=list)
    split: str | None = None
    position: int = 0
    corpus: Path | None = None  # MAT-Search-mini: the documents of this question's own world, when it has one


def _where(path: Path, position: int, record: Any) -> str:
    if isinstance(record, dict) and "id" in record:
        return f"{path}: item {position} (id {record['id']!r})"
    return f"{path}: item {position}"


def _records(path: str | Path, benchmark: str) -> tuple[Path, list[dict]]:
    path = Path(path)
    records = read_json_records(path, BenchmarkFileError)
    if isinstance(records, dict):
        # Some releases wrap the list, e.g. {"data": [...]}: accept one list-valued field.
        lists = [value for value in records.values() if isinstance(value, list)]
        if len(lists) == 1:
            records = lists[0]
    if not isinstance(records, list):
        raise BenchmarkFileError(f"{path}: expected a JSON list of {benchmark} items, got {type(records).__name__}")
    if not records:
        raise BenchmarkFileError(f"{path}: the file holds no items")
    for position, record in enumerate(records):
        if not isinstance(record, dict):
            raise BenchmarkFileError(f"{_where(path, position, record)}: expected an object, "
                                     f"got {type(record).__name__}")
    return path, records


def _text(record: dict, keys: tuple[str, ...], where: str) -> str:
    for key in keys:
        if key in record:
            value = record[key]
            if not isinstance(value, str) or not value.strip():
                raise BenchmarkFileError(f"{where}: {key!r} must be a non-empty string")
            return value
    raise BenchmarkFileError(f"{where}: missing field {' or '.join(repr(k) for k in keys)}")


def _answers(record: dict, keys: tuple[str, ...], where: str) -> list[str]:
    for key in keys:
        if key in record:
            value = record[key]
            answers = [value] if isinstance(value, str) else value
            if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
                raise BenchmarkFileError(f"{where}: {key!r} must be a string or a non-empty list of strings")
            return list(answers)
    raise BenchmarkFileError(f"{where}: missing field {' or '.join(repr(k) for k in keys)}")


def _item_id(record: dict, position: int, where: str, seen: dict[str, int], required: bool) -> str:
    if "id" not in record:
        if required:
            raise BenchmarkFileError(f"{where}: missing field 'id'")
        item_id = str(position)
    else:
        value = record["id"]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise BenchmarkFileError(f"{where}: 'id' must be a string or an integer")
        item_id = str(value)
    if item_id in seen:
        raise BenchmarkFileError(f"{where}: duplicate id {item_id!r} (first seen at item {seen[item_id]})")
    seen[item_id] = position
    return item_id


def _split(record: dict, position: int, benchmark: str, where: str) -> str:
    split = record.get("split")
    if split is None:
        return "simple" if position < MAT_SPLITS[benchmark][0] else "hard"
    if split not in SPLITS:
        raise BenchmarkFileError(f"{where}: 'split' must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


def _image_root(path: Path, images_dir: str | Path | None) -> Path:
    root = Path(images_dir) if images_dir is not None else path.parent
    if not root.is_dir():
        raise BenchmarkFileError(f"images folder {root} does not exist")
    return root


def _resolve(root: Path, name: Any, key: str, where: str) -> Path:
    if not isinstance(name, str) or not name.strip():
        raise BenchmarkFileError(f"{where}: {key!r} must be a non-empty path string")
    primary = Path(name) if Path(name).is_absolute() else root / name
    # Released files sometimes carry the authors' absolute or nested paths: fall back to the file name.
    fallback = root / Path(name).name
    return primary if primary.is_file() or not fallback.is_file() else fallback


def _require_image(image: Path, key: str, where: str, root: Path) -> Path:
    if not image.is_file():
        raise BenchmarkFileError(f"{where}: image {key}={image.name!r} not found under {root} "
                                 f"(looked for {image}); pass the folder holding the images")
    return image


def _types(record: dict, where: str) -> list[str]:
    value = record.get("type", record.get("types"))
    if isinstance(value, str):
        value = [part for part in value.split("+") if part]  # "rotation90+dark" style
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise BenchmarkFileError(f"{where}: 'type' must be a non-empty list of degradation labels")
    return [v.strip().lower() for v in value]


def load_mat_coding(path: str | Path, images_dir: str | Path | None = None,
                    check_images: bool = True) -> list[BenchmarkItem]:
    """MAT-Coding: id, question, answers, ori_image_path, processed_image_path, type, split.

    The model sees the processed image, except for `crop` items (original
    image). `clean_image` is the original for non-crop items when that file
    exists (it is optional: only the code-restoration reward uses it).
    """
    path, records = _records(path, "mat-coding")
    root = _image_root(path, images_dir)
    seen: dict[str, int] = {}
    items = []
    for position, record in enumerate(records):
        where = _where(path, position, record)
        item_id = _item_id(record, position, where, seen, required=True)
        types = _types(record, where)
        original = _resolve(root, record.get("ori_image_path"), "ori_image_path", where)
        processed_name = record.get("processed_image_path")
        if "crop" in types:
            image, key, clean = original, "ori_image_path", None
        else:
            image = _resolve(root, processed_name, "processed_image_path", where)
            key, clean = "processed_image_path", original
        if check_images:
            _require_image(image, key, where, root)
        items.append(BenchmarkItem(
            id=item_id, question=_text(record, ("question",), where),
            answers=_answers(record, ("answers", "answer"), where), image=image,
            clean_image=clean if clean is not None and clean.is_file() else None,
            types=types, split=_split(record, position, "mat-coding", where), position=position))
    return items


def load_mat_search(path: str | Path, images_dir: str | Path | None = None,
                    check_images: bool = True) -> list[BenchmarkItem]:
    """MAT-Search: id, question, answer (string or list), image_path (+ optional split)."""
    path, records = _records(path, "mat-search")
    root = _image_root(path, images_dir)
    seen: dict[str, int] = {}
    items = []
    for position, record in enumerate(records):
        where = _where(path, position, record)
        item_id = _item_id(record, position, where, seen, required=True)
        image = _resolve(root, record.get("image_path"), "image_path", where)
        if check_images:
            _require_image(image, "image_path", where, root)
        items.append(BenchmarkItem(
            id=item_id, question=_text(record, ("question",), where),
            answers=_answers(record, ("answer", "answers"), where), image=image,
            split=_split(record, position, "mat-search", where), position=position,
            corpus=_item_corpus(path, record, where)))
    return items


def _item_corpus(path: Path, record: dict, where: str) -> Path | None:
    """The optional per-question `corpus` (relative to the file), as the demo world's drills write it."""
    if record.get("corpus") is None:
        return None
    corpus = _resolve(path.parent, record["corpus"], "corpus", where)
    if not corpus.exists():
        raise BenchmarkFileError(f"{where}: corpus {record['corpus']!r} not found next to {path.name} "
                                 f"(looked for {corpus})")
    return corpus


def load_multihop(path: str | Path) -> list[BenchmarkItem]:
    """Plain multi-hop QA (2Wiki, HotpotQA, MuSiQue, Bamboogle): JSON list or JSON Lines.

    Fields: question, answer list (`answer`, `answers` or `golden_answers`),
    optional id (default: the position).
    """
    path, records = _records(path, "multihop")
    seen: dict[str, int] = {}
    items = []
    for position, record in enumerate(records):
        where = _where(path, position, record)
        items.append(BenchmarkItem(
            id=_item_id(record, position, where, seen, required=False),
            question=_text(record, ("question", "query"), where),
            answers=_answers(record, ("answers", "answer", "golden_answers"), where), position=position))
    return items


def load_benchmark(benchmark: str, path: str | Path, images_dir: str | Path | None = None,
                   check_images: bool = True) -> list[BenchmarkItem]:
    """Load any supported benchmark file by name (mat-coding, mat-search, multihop)."""
    if benchmark == "mat-coding":
        return load_mat_coding(path, images_dir, check_images)
    if benchmark == "mat-search":
        return load_mat_search(path, images_dir, check_images)
    if benchmark == "multihop":
        return load_multihop(path)
    raise ValueError(f"unknown benchmark {benchmark!r}; use one of {', '.join(BENCHMARK_FORMATS)}")
