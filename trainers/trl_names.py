"""TRL's own setting names in workbench training configs, and `--name value` overrides on the command line.

Researchers arrive with TRL GRPOConfig / SFTConfig keys (the Visual-ARFT
scripts pass `--per_device_train_batch_size`, `--num_generations`,
`--learning_rate`, `--beta` ...). Owns how a config's input keys are read:
- a workbench field that mirrors a TRL field has TRL's name; the names it
  had before stay as aliases (`ALIASES`), so old config files and job rows load;
- a few TRL/PEFT names map onto a workbench field with a value change
  (`bf16: true` -> `precision: bf16`; `max_tool_calling_iterations: 4` -> `max_turns: 5`);
- any other valid field of the TRL config class passes through to TRL
  unchanged (`trl_args`), except the ones the workbench sets itself;
- a key known to neither is refused, naming the closest known key.
TRL is imported only when a config carries keys the workbench does not know.
"""

import dataclasses
import difflib
import json
from typing import Any

# workbench name it had before -> TRL's name, now the field's name
ALIASES = {
    "per_device_batch_size": "per_device_train_batch_size",
    "lr_scheduler": "lr_scheduler_type",
    "eval_generations": "num_generations_eval",
    "shuffle": "shuffle_dataset",
    "epochs": "num_train_epochs",
    "model_name_or_path": "model",  # TRL's ModelConfig
}

# TRL settings the workbench decides itself: passing them would break what it owns
MANAGED = {
    "output_dir": "checkpoints go to the run's folder under the workbench home",
    "report_to": "metrics go to the workbench store (the Runs tab)",
    "logging_steps": "the workbench logs every step",
    "use_cpu": "follows gpus (0 trains on the CPU)",
    "reward_weights": "set the weights in `rewards`",
    "save_strategy": "use save_steps (0 saves only at the end)",
    "eval_strategy": "use eval_steps (0 never evaluates)",
    "eval_on_start": "the held-out reward is measured before training whenever eval_steps > 0",
    "per_device_eval_batch_size": "evaluation batches follow per_device_train_batch_size",
    "disable_tqdm": "job logs show the workbench's progress lines",
    "dataloader_num_workers": "rows hold images that load in the training process",
    "remove_unused_columns": "the tool environment reads the extra columns",
    "assistant_only_loss": "SFT trains on the assistant turns only",
    "activation_checkpointing": "use gradient_checkpointing",
    "vllm_mode": "the workbench runs vLLM colocated (use_vllm)",
}

# names from older TRL releases that users bring from published scripts
RETIRED = {
    "max_prompt_length": "TRL 1.x's GRPOConfig has no max_prompt_length (it no longer truncates GRPO prompts); "
                         "drop it, and bound images with max_pixels instead",
}


def _precision(value: Any, name: str) -> dict[str, Any]:
    return {"precision": name} if _as_bool(value) else {}


VALUE_MAPS = {  # TRL/PEFT name -> function(value) giving workbench fields
    "bf16": lambda v: _precision(v, "bf16"),
    "fp16": lambda v: _precision(v, "fp16"),
    "use_peft": lambda v: {"finetune": "lora" if _as_bool(v) else "full"},
    "max_tool_calling_iterations": lambda v: {"max_turns": int(v) + 1},
}


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def trl_config_class(kind: str) -> type:
    """TRL's config class for a job kind (imports TRL: seconds, so only when needed)."""
    from trl import GRPOConfig, SFTConfig

    return {"grpo": GRPOConfig, "sft": SFTConfig}[kind]


def trl_field_names(kind: str) -> set[str]:
    return {f.name for f in dataclasses.fields(trl_config_class(kind)) if f.init}


def normalize_keys(values: dict[str, Any], own_fields: set[str],
                   error: type[Exception] = ValueError) -> dict[str, Any]:
    """The config's values under the workbench's field names; keys it does not know go to `trl_args`.

    Raises `error` for a retired or workbench-managed TRL name, or a setting
    given twice under two names. `check_trl_args` then checks what went to TRL.
    """
    out: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    passthrough = dict(values.get("trl_args") or {})

    def put(name: str, value: Any, source: str) -> None:
        if name in given_as and given_as[name] != source:
            raise error(f"{name} is given twice (as {given_as[name]} and as {source}); keep one")
        given_as[name] = source
        out[name] = value

    for key, value in values.items():
        if key == "trl_args":
            continue
        if key in own_fields:
            put(key, value, key)
        elif key in ALIASES and ALIASES[key] in own_fields:
            put(ALIASES[key], value, key)
        elif key in VALUE_MAPS:
            for name, mapped in VALUE_MAPS[key](value).items():
                put(name, mapped, key)
        else:
            passthrough[key] = value
    if passthrough:
        out["trl_args"] = passthrough
    return out


def check_trl_args(trl_args: dict[str, Any], own_fields: set[str], kind: str,
                   error: type[Exception] = ValueError) -> None:
    """Refuse what cannot pass through to TRL: its retired names, names the workbench sets itself or has as
    its own setting, and names TRL's config class does not have (naming the closest known one)."""
    if not trl_args:
        return
    trl_fields = trl_field_names(kind)
    for key in trl_args:
        if key in RETIRED:
            raise error(RETIRED[key])
        if key in MANAGED:
            raise error(f"{key} is set by the workbench ({MANAGED[key]}); remove it from the config")
        if key in own_fields or key in ALIASES or key in VALUE_MAPS:
            raise error(f"{key} is a workbench setting; set it directly, not through trl_args")
        if key not in trl_fields:
            known = sorted(own_fields | set(ALIASES) | set(VALUE_MAPS) | trl_fields)
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise error(f"unknown setting {key!r} for a {kind} job: not a workbench setting nor a field of "
                        f"TRL's {trl_config_class(kind).__name__}{hint}")


def parse_overrides(tokens: list[str], error: type[Exception] = ValueError) -> dict[str, Any]:
    """`--name value` / `--name=value` / `--name v1 v2` tokens as config values (JSON where it parses).

    >>> parse_overrides(["--num_generations", "4", "--beta=0.0", "--data_files", "a.json", "b.json", "--bf16"])
    {'num_generations': 4, 'beta': 0.0, 'data_files': ['a.json', 'b.json'], 'bf16': True}
    >>> parse_overrides(["--report_to", "none", "--use_peft", "True"])
    {'report_to': 'none', 'use_peft': True}
    """
    values: dict[str, Any] = {}
    name: str | None = None
    for token in tokens:
        if token.startswith("--") and len(token) > 2:
            name, _, inline = token[2:].partition("=")
            name = name.replace("-", "_")
            values[name] = [] if not inline else [inline]
        elif name is None:
            raise error(f"unexpected argument {token!r}; settings look like --name value")
        else:
            values[name].append(token)
    return {key: _parse_value(parts) for key, parts in values.items()}


def settings_as_flags(values: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
    """The settings that differ from `defaults` as `--name value` tokens, so `parse_overrides` reads them back.

    >>> settings_as_flags({"data_files": ["a.json"], "beta": 0.0, "tools": [], "run_name": "1",
    ...                    "rewards": {"format": 1}},
    ...                   {"data_files": [], "beta": 0.04, "tools": ["code"], "run_name": "", "rewards": {}})
    ['--data_files', 'a.json', '--beta', '0.0', '--tools', '[]', '--run_name', '"1"', '--rewards', '{"format": 1}']
    """
    flags: list[str] = []
    for name, value in values.items():
        if name in defaults and value == defaults[name]:
            continue
        flags.append(f"--{name}")
        plain_list = isinstance(value, list) and value and all(
            isinstance(v, str) and _parse_one(v) == v and not v.startswith("--") for v in value)
        if plain_list:
            flags += value
        elif isinstance(value, str) and _parse_one(value) == value and not value.startswith("--") and value:
            flags.append(value)
        else:  # numbers, booleans, None, dicts, lists that need it, and strings that would read as something else
            flags.append(json.dumps(value))
    return flags


def _parse_value(parts: list[str]) -> Any:
    if not parts:
        return True  # a bare flag, as HfArgumentParser reads `--bf16`
    parsed = [_parse_one(part) for part in parts]
    return parsed[0] if len(parsed) == 1 else parsed


def _parse_one(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return json.loads(text)
    except ValueError:
        return text
