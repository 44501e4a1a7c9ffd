"""Reading data files the workbench takes in: a JSON document or JSON Lines, UTF-8, with errors that name the item.

Benchmarks, result files, training files and trace chains all arrive this
way; `read_json_records` parses them and says which file (and, for bytes
that are not UTF-8, which item) is wrong.
"""

import json
from pathlib import Path
from typing import Any


def describe_item(position: int, item: Any) -> str:
    """How an error names an item: its id when it has one, else its position."""
    if isinstance(item, dict) and "id" in item:
        return f"item {position} (id {item['id']!r})"
    return f"item {position}"


def _first_bad_utf8_item(raw: bytes, error: UnicodeDecodeError) -> str:
    """Name the item holding the first invalid byte, by parsing with the bad bytes escaped."""
    where = f"byte 0x{raw[error.start]:02x} at offset {error.start} is not valid UTF-8"
    try:
        records = _parse_records(raw.decode("utf-8", errors="surrogateescape"))
    except ValueError:
        return where
    for position, record in enumerate(records if isinstance(records, list) else []):
        dumped = json.dumps(record, ensure_ascii=False) if isinstance(record, (dict, list)) else str(record)
        if any("\udc80" <= ch <= "\udcff" for ch in dumped):
            return f"{describe_item(position, record)}: {where}"
    return where


def _parse_records(text: str) -> Any:
    """A JSON document, or JSON Lines when the text is one object per line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        lines = [line for line in text.splitlines() if line.strip()]
        if exc.msg != "Extra data" or not lines or not lines[0].lstrip().startswith("{"):
            raise ValueError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as line_exc:
                raise ValueError(f"not valid JSON Lines: line {number}: {line_exc.msg} "
                                 f"at column {line_exc.colno}") from None
        return records


def read_json_records(path: str | Path, error_class: type[ValueError] = ValueError) -> Any:
    """Parse a UTF-8 JSON or JSON Lines file; errors name the file and, for bad bytes, the item."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error_class(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error_class(f"{path}: {_first_bad_utf8_item(raw, exc)}; save the file as UTF-8") from None
    try:
        return _parse_records(text)
    except ValueError as exc:
        raise error_class(f"{path}: {exc}") from None
