"""Scoring a file of completions with a reward preset: what `python -m workbench reward` runs.

A row is {"kind": "code"|"search", "solution": the expected next action with
its tags, "completion": what the model wrote, optional "type" (pre_problem /
pre_code / pre_answer / pre_search) and "gt" (gold answers)}, as the
released training files and a GRPO batch carry them. Each row gets its
`format` score, its `accuracy` (the weighted sum of the preset's other
components) and the weighted `total`, plus every component on its own.
"""

from pathlib import Path
from typing import Any

from workbench.records import read_json_records
from workbench.rewards.paper import KINDS
from workbench.rewards.spec import RewardSpec, score_components

STEP_TYPES = ("pre_problem", "pre_code", "pre_answer", "pre_search")


def check_rows(records: Any, source: str) -> list[dict]:
    """The rows, checked; a ValueError names the first bad row and field."""
    if not isinstance(records, list) or not records:
        raise ValueError(f"{source}: expected JSON Lines (or a JSON list) of {{kind, solution, completion}} rows")
    for position, row in enumerate(records):
        where = f"{source} row {position}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object, got {type(row).__name__}")
        if row.get("kind") not in KINDS:
            raise ValueError(f"{where}: kind {row.get('kind')!r} is unknown; use code or search")
        for key in ("solution", "completion"):
            if not isinstance(row.get(key), str):
                raise ValueError(f"{where}: '{key}' must be a string")
        if row.get("type") is not None and row["type"] not in STEP_TYPES:
            raise ValueError(f"{where}: type {row['type']!r} is unknown; use one of {', '.join(STEP_TYPES)}")
        gold = row.get("gt")
        if gold is not None and not isinstance(gold, str) and not (
                isinstance(gold, list) and all(isinstance(g, str) for g in gold)):
            raise ValueError(f"{where}: 'gt' must be a string or a list of strings")
    return records


def read_rows(path: str | Path) -> list[dict]:
    """Rows from a JSONL (or JSON list) file."""
    records = read_json_records(path)
    return check_rows([records] if isinstance(records, dict) else records, str(path))  # one line: one row


def score_rows(rows: list[dict], preset: str = "workbench") -> list[dict[str, Any]]:
    """Per row: format, accuracy (the other components' weighted sum), total, and each component.

    >>> [r["total"] for r in score_rows([{"kind": "code", "type": "pre_answer", "solution": "<answer> 81 </answer>",
    ...                                    "completion": "<think> t </think>\\n<answer> 81 </answer>\\n"}], "paper")]
    [1.0]
    """
    spec = RewardSpec(preset=preset)
    columns = {name: [row.get(name) for row in rows] for name in ("kind", "solution", "type", "gt")}
    parts = score_components(spec, [row["completion"] for row in rows], **columns)
    weights = spec.weights()
    scored = []
    for i in range(len(rows)):
        components = {name: parts[name][i] for name in weights if name in parts}
        accuracy = sum(weights[name] * value for name, value in components.items()
                       if name != "format" and value is not None)
        scored.append({"format": float(components.get("format") or 0.0), "accuracy": float(accuracy),
                       "total": float(parts["total"][i]), "components": components})
    return scored
