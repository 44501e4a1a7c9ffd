"""Config fields that carry their help text: one source for form labels and info, `--help` and error hints.

Every config dataclass (RunnerConfig, EvalConfig, RewardSpec, the training
job configs) declares its fields with `setting(help, default)`; the UI forms
(workbench/ui/forms.py) and the command lines read the text back with
`field_help(cls)`.

>>> from dataclasses import dataclass
>>> @dataclass
... class Example:
...     steps: int = setting("Optimiser steps.", 10)
>>> field_help(Example), Example().steps
({'steps': 'Optimiser steps.'}, 10)
"""

from dataclasses import MISSING, field, fields
from typing import Any


def setting(help: str, default: Any = MISSING, *, default_factory: Any = MISSING, **metadata: Any) -> Any:
    """A dataclass field whose metadata holds its help text (and any other `metadata` given)."""
    return field(default=default, default_factory=default_factory, metadata={"help": help, **metadata})


def field_help(cls: type) -> dict[str, str]:
    """Each field's help text, by field name."""
    return {f.name: f.metadata.get("help", "") for f in fields(cls)}
