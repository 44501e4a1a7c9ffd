"""Checks run before a training job is launched: `validate_for_launch(config)`.

`__post_init__` of the configs catches values that are wrong on their own;
these checks need the model, the data or the store, and are still cheap:
the model's config is read and the model is built on the meta device (no
weights) to match the LoRA target regex against its module names; the
training files are parsed and their images looked up; the traces for SFT
are counted; GPUs, DeepSpeed and vLLM are looked for when asked. Each
failure raises `ConfigError` with what to change.
"""

import importlib.util
import re
from pathlib import Path

from trainers.config import LANGUAGE_MODEL_LORA_TARGET, ConfigError, GrpoJobConfig, SftJobConfig, TrainJobConfig


def _model_modules(config: TrainJobConfig) -> tuple[str, list[tuple[str, str]]]:
    from trainers.modeling import module_names, resolve_model_path

    path = resolve_model_path(config.model)
    try:
        return path, module_names(path)
    except Exception as exc:  # missing folder, unknown hub id, no network, not an image-text model
        raise ConfigError(f"model {config.model!r} cannot be loaded ({type(exc).__name__}: {exc}); give 'tiny', a "
                          "model folder with config.json, or a reachable hub id of a Qwen-VL model") from None


def check_lora_target(config: TrainJobConfig, modules: list[tuple[str, str]]) -> list[str]:
    """Names of the Linear modules the LoRA regex selects; refuses a regex that selects none."""
    pattern = re.compile(config.lora_target)
    chosen = [name for name, kind in modules if pattern.fullmatch(name)]
    linear = [name for name, kind in modules if pattern.fullmatch(name) and kind == "Linear"]
    if not chosen:
        linear_names = [name for name, kind in modules if kind == "Linear"]
        examples = ([n for n in linear_names if "language_model" in n] or linear_names)[:2]
        raise ConfigError(f"lora_target {config.lora_target!r} matches no module of {config.model}; it must match "
                          f"whole module names such as {', '.join(examples)}; the default "
                          f"{LANGUAGE_MODEL_LORA_TARGET} takes the language model's attention and MLP")
    if not linear:
        raise ConfigError(f"lora_target {config.lora_target!r} matches only non-Linear modules (e.g. {chosen[0]}); "
                          "target the q_proj/k_proj/v_proj/o_proj/gate_proj/up_proj/down_proj layers")
    return linear


def _check_hardware(config: TrainJobConfig) -> None:
    if config.launcher == "slurm":
        _check_slurm(config)
        return
    if config.gpus == 0:
        return
    from trainers.launch import visible_gpus  # the same view of the machine the launch uses

    visible = visible_gpus()
    available = len(visible)
    if available < config.gpus:
        raise ConfigError(f"gpus={config.gpus} but {available} CUDA GPU(s) are visible; set gpus to at most "
                          f"{available} (0 trains on CPU)")
    if getattr(config, "use_vllm", False) and getattr(config, "vllm_mode", "") == "server" \
            and available < config.gpus + config.vllm_server_gpus:
        raise ConfigError(f"vllm_mode=server needs gpus + vllm_server_gpus = {config.gpus + config.vllm_server_gpus} "
                          f"GPUs but {available} are visible; lower gpus or vllm_server_gpus, or use "
                          "vllm_mode=colocate")
    wanted = [int(part) for part in config.gpu_ids.split(",") if part.strip()]
    if wanted and max(wanted) >= available:
        raise ConfigError(f"gpu_ids={config.gpu_ids!r} names GPU {max(wanted)} but only {available} are visible "
                          f"(0..{available - 1}); pick from those or leave gpu_ids empty")
    if config.gpus > 1 and config.deepspeed_stage and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"deepspeed_stage={config.deepspeed_stage} needs DeepSpeed, which is not installed: run "
                          "`pip install -r requirements-gpu.txt` (deepspeed 0.19.8), or set deepspeed_stage=0 for "
                          "plain multi-GPU DDP")
    if getattr(config, "use_vllm", False):
        problem = vllm_problem()
        if problem:
            raise ConfigError(f"use_vllm: {problem}; or turn use_vllm off")


def _check_slurm(config: TrainJobConfig) -> None:
    """A Slurm launch is checked where it is submitted: the GPUs are on the cluster's nodes, not here."""
    import os
    import shutil

    if os.environ.get("SLURM_JOB_ID"):
        return  # a rank inside the allocation: it was checked where it was submitted
    missing = [tool for tool in ("sbatch", "scontrol", "scancel") if shutil.which(tool) is None]
    if missing:
        raise ConfigError(f"launcher=slurm needs Slurm's {', '.join(missing)} here; run the workbench on a machine "
                          "that submits to the cluster (a login node), or use launcher=local")
    if config.world_size > 1 and config.gpus and config.deepspeed_stage \
            and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"deepspeed_stage={config.deepspeed_stage} needs DeepSpeed, which is not installed: run "
                          "`pip install -r requirements-gpu.txt` (deepspeed 0.19.8), or set deepspeed_stage=0")


VLLM_RANGE = ("0.22.0", "0.31.0")  # TRL 1.16's supported vLLM versions (trl/import_utils.py)
VLLM_INSTALL = ("make the vLLM environment: `python -m venv .venv-vllm && .venv-vllm/bin/pip install -r "
                "requirements-vllm.txt` and run the workbench from it (TRL 1.16 needs vllm 0.22-0.31, which pin "
                "torch 2.13 and transformers < 5.18, below requirements.txt's)")


def vllm_problem() -> str | None:
    """Why TRL cannot generate with vLLM in this environment (None: it can)."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    try:
        installed = version("vllm")
    except PackageNotFoundError:
        return f"vllm is not installed; {VLLM_INSTALL}"
    low, high = VLLM_RANGE
    if not Version(low) <= Version(Version(installed).base_version) <= Version(high):
        return f"vllm {installed} is outside TRL 1.16's supported {low}-{high}; {VLLM_INSTALL}"
    return None


def _check_grpo_data(config: GrpoJobConfig) -> int:
    from trainers.data import TrainingDataError, load_episode_items, load_step_samples

    try:
        if config.mode == "steps":
            rows = load_step_samples(config.data_files, config.image_root)
        else:
            rows = load_episode_items(config.data_files, config.image_root)
    except (TrainingDataError, ValueError) as exc:
        raise ConfigError(f"training data: {exc}") from None
    if config.max_items:
        rows = rows[:config.max_items]
    if len(rows) < 1:
        raise ConfigError("the training files hold no usable rows")
    if config.mode == "episodes" and "search" in config.tools and config.search_backend == "local" \
            and not config.search_corpus:
        without_corpus = sum(1 for row in rows if not row.search_corpus)
        if without_corpus:
            raise ConfigError(f"the search tool with the local backend needs a corpus: {without_corpus} rows name "
                              "none; set search_corpus (a JSONL corpus), give the rows a corpus field, use "
                              "search_backend=serpapi, or drop search from tools")
    return len(rows)


def _check_sft_data(config: SftJobConfig) -> int:
    from trainers.sft_data import collect_traces
    from workbench.store import Store

    try:
        traces = collect_traces(config, Store())
    except ValueError as exc:
        raise ConfigError(f"traces: {exc}") from None
    if not traces:
        raise ConfigError(f"no trace passes the filters (protocol={config.protocol}, only_answered="
                          f"{config.only_answered}, min_reward={config.min_reward}); record or import traces, or "
                          "relax the filters")
    return len(traces)


def _check_code_sandbox(config: TrainJobConfig) -> None:
    """Code episodes and execution rewards need the sandbox; say why it cannot start, before training."""
    needs_code = isinstance(config, GrpoJobConfig) and (
        "code" in config.episode_tools
        or (config.mode == "steps" and config.reward_spec().executes_code()))
    if not needs_code:
        return
    from tools.code_sandbox import SandboxUnavailable, shared_sandbox

    try:
        shared_sandbox()
    except SandboxUnavailable as exc:
        raise ConfigError(f"the code tool cannot run here, so this job cannot train it: {exc}") from None


def _check_trl_args(config: TrainJobConfig) -> None:
    """Settings passed through to TRL are checked by TRL's own config class, before any process starts."""
    if not config.trl_args:
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="preflight-") as folder:
        try:
            from trainers.arguments import grpo_arguments, sft_arguments

            if isinstance(config, GrpoJobConfig):
                grpo_arguments(config, Path(folder), [1.0])
            else:
                sft_arguments(config, Path(folder))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"TRL refuses the settings passed through to it ({sorted(config.trl_args)}): "
                              f"{exc}") from None


def validate_for_launch(config: TrainJobConfig) -> None:
    """Refuse a config that cannot train, before any process starts (ConfigError says what to change)."""
    if config.init_adapter and not (Path(config.init_adapter) / "adapter_config.json").is_file():
        raise ConfigError(f"init_adapter {config.init_adapter} has no adapter_config.json; give the folder of a "
                          "LoRA checkpoint (e.g. .../checkpoint-100 of an SFT run)")
    _check_hardware(config)
    _check_trl_args(config)
    _check_code_sandbox(config)
    if isinstance(config, GrpoJobConfig):
        _check_grpo_data(config)
    elif isinstance(config, SftJobConfig):
        _check_sft_data(config)
    _, modules = _model_modules(config)
    if config.finetune == "lora" and not config.init_adapter:
        check_lora_target(config, modules)
