"""Form controls generated from config dataclasses, and the dataclass back from the form's values.

One generic helper for every config the UI edits (RunnerConfig now, the
training configs later): the label comes from the field name, the `info`
text from the field's `metadata["help"]`, the control from the field type
(tuple of choices -> CheckboxGroup, choices -> Radio, bool -> Checkbox,
int/float -> Number or Slider, str -> Textbox). `FieldSpec` overrides give
choices, bounds, or hide/lock a field (the public demo locks a few).
"""

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

import gradio as gr


@dataclass
class FieldSpec:
    """How to show one config field, beyond what its type says."""

    choices: list[Any] | None = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    visible: bool = True
    interactive: bool = True
    label: str | None = None


def field_label(name: str) -> str:
    """`max_new_tokens` -> "Max new tokens".

    >>> field_label("retry_parse_errors")
    'Retry parse errors'
    """
    words = name.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """The non-None type of an annotation and whether None is allowed."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else str), True
    return annotation, False


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return None


def form_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def build_form(cls: type, specs: dict[str, FieldSpec] | None = None, defaults: dict[str, Any] | None = None,
               only: tuple[str, ...] | None = None,
               exclude: tuple[str, ...] = ()) -> dict[str, gr.components.Component]:
    """Create one Gradio control per dataclass field (inside the current Blocks context).

    `only` / `exclude` pick a subset, so one config can be laid out in several places.
    """
    specs = specs or {}
    hints = typing.get_type_hints(cls)
    controls: dict[str, gr.components.Component] = {}
    for field in form_fields(cls):
        if (only is not None and field.name not in only) or field.name in exclude:
            continue
        spec = specs.get(field.name, FieldSpec())
        kind, optional = _base_type(hints[field.name])
        value = (defaults or {}).get(field.name, _default(field))
        common = dict(label=spec.label or field_label(field.name), info=field.metadata.get("help") or None,
                      visible=spec.visible, interactive=spec.interactive)
        origin = typing.get_origin(kind)
        if origin in (tuple, list) or kind in (tuple, list):
            controls[field.name] = gr.CheckboxGroup(choices=spec.choices or list(value or []),
                                                    value=list(value or []), **common)
        elif kind is bool:
            controls[field.name] = gr.Checkbox(value=bool(value), **common)
        elif spec.choices is not None:
            controls[field.name] = gr.Radio(choices=spec.choices, value=value, **common)
        elif kind in (int, float) and spec.minimum is not None and spec.maximum is not None:
            step = spec.step or (1 if kind is int else 0.05)
            controls[field.name] = gr.Slider(minimum=spec.minimum, maximum=spec.maximum, step=step,
                                             value=value, **common)
        elif kind in (int, float):
            controls[field.name] = gr.Number(value=value, precision=0 if kind is int else None,
                                             minimum=spec.minimum, maximum=spec.maximum, **common)
        else:
            controls[field.name] = gr.Textbox(value="" if value is None else str(value),
                                              lines=3 if optional else 1, **common)
    return controls


def form_values(cls: type, names: list[str], values: list[Any] | tuple[Any, ...], **fixed: Any) -> Any:
    """Build `cls` from the controls' values (in `names` order); ValueError says which field is wrong."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in zip(names, values):
        kind, optional = _base_type(hints[name])
        origin = typing.get_origin(kind)
        try:
            if origin in (tuple, list) or kind in (tuple, list):
                value = tuple(value or ())
            elif kind is bool:
                value = bool(value)
            elif kind in (int, float):
                if value is None or value == "":
                    if not optional:
                        raise ValueError("a number is required")
                    value = None
                elif kind is int:
                    if float(value) != int(float(value)):
                        raise ValueError(f"{value} is not a whole number")
                    value = int(float(value))
                else:
                    value = float(value)
            elif kind is str:
                text = "" if value is None else str(value)
                value = None if optional and not text.strip() else text
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{field_label(name)}: {exc}") from exc
        kwargs[name] = value
    kwargs.update(fixed)
    return cls(**kwargs)
