"""Training job configs: one dataclass per job kind, validated, JSON round-trippable.

`GrpoJobConfig` (GRPO on Visual-ARFT data: the paper's per-step recipe or
multi-turn tool episodes) and `SftJobConfig` (cold-start SFT on traces) share
`TrainJobConfig` (model, LoRA/full fine-tuning, optimiser, checkpoints,
scale-out). Every field carries metadata={"help": ...} for the UI form and
`--help`; `__post_init__` refuses bad values with a message that names the
field and what to change, including values over UPPER_BOUNDS. Checks that need the model or the store (LoRA
target regex vs the model's modules, traces present) live in
`trainers.preflight.validate_for_launch`, which the jobs module calls before
launching. `to_dict`/`from_dict`/`save`/`load_config` move a config between
the UI, the job row and the CLI (`--config FILE`).
"""

import json
import math
import re
import typing
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from tools.search import BACKENDS as SEARCH_BACKENDS
from tools.search import MODES as SEARCH_MODES
from trainers.data import STEP_PREPROCESSING
from trainers.trl_names import check_trl_args, normalize_keys
from workbench import protocol as proto
from workbench.fields import setting
from workbench.rewards import RewardSpec

# Attention + MLP projections of the language model only: the vision tower's MLP reuses the names
# gate_proj/up_proj/down_proj, so the "language_model" part of the path keeps it out (FIELD-NOTES).
LANGUAGE_MODEL_LORA_TARGET = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
FINETUNE_MODES = ("lora", "full")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LR_SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")
GRPO_MODES = ("steps", "episodes")
LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo")
SCALE_REWARDS = ("group", "batch", "none")
DEEPSPEED_STAGES = (0, 2, 3)


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field and what to change."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


# Upper bounds far above any real run on this workbench; past them a value is a typo (10**9) or a way to hog
# the machine, and the job would never finish or run out of memory at once.
LAUNCHERS = ("local", "slurm")
VLLM_MODES = ("colocate", "server")
UPPER_BOUNDS = {
    "lora_r": 1024, "lora_alpha": 4096, "warmup_steps": 1_000_000, "per_device_train_batch_size": 1024,
    "gradient_accumulation_steps": 1024, "max_pixels": 50_000_000, "min_pixels": 50_000_000,
    "save_steps": 1_000_000, "save_total_limit": 1000, "seed": 2**32 - 1, "gpus": 64, "cpu_processes": 16,
    "nodes": 1024,
    "max_steps": 1_000_000, "num_generations": 256, "max_completion_length": 32_768, "temperature": 10.0,
    "max_items": 10_000_000, "eval_steps": 1_000_000, "max_eval_items": 10_000_000, "num_generations_eval": 256,
    "log_traces_every": 1_000_000, "trace_groups": 64, "num_train_epochs": 1000, "max_length": 131_072,
}


def _check_upper_bounds(config: Any) -> None:
    for name, limit in UPPER_BOUNDS.items():
        value = getattr(config, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            _require(value <= limit, f"{name}={value} is over this workbench's limit of {limit}; use a value "
                                     f"up to {limit} (a larger run needs a change of trainers/config.py)")


@dataclass
class TrainJobConfig:
    """Settings every training job shares: model, fine-tuning, optimiser, checkpoints, scale-out."""

    KIND = "train"

    model: str = setting("Model to train: 'demo' (the shipped demo model), 'tiny' (untrained, Qwen2.5-VL-style), "
                       "'tiny-qwen3-vl', a local model folder or a Hugging Face hub id such as "
                       "Qwen/Qwen2.5-VL-3B-Instruct.", "demo")
    init_adapter: str | None = setting("LoRA adapter folder to start from (e.g. the checkpoint of a cold-start SFT "
                                     "run); it keeps training (LoRA) or is merged first (full).", None)
    finetune: str = setting("lora: train a LoRA adapter (small checkpoints); full: train every weight.", "lora")
    lora_r: int = setting("LoRA rank.", 8)
    lora_alpha: int = setting("LoRA scaling (alpha); the update is scaled by alpha / r.", 16)
    lora_dropout: float = setting("Dropout on the LoRA input.", 0.0)
    lora_target: str = setting("Regex over module names (full match) choosing LoRA targets; the default takes the "
                             "language model's attention and MLP and leaves the vision tower alone.",
                             LANGUAGE_MODEL_LORA_TARGET)
    learning_rate: float = setting("Peak learning rate (AdamW).", 1e-5)
    warmup_steps: int = setting("Linear warm-up steps.", 0)
    lr_scheduler_type: str = setting("Learning rate after warm-up: linear (decays to 0 at the last step), cosine, or "
                                   "constant (long drills whose skill appears late); TRL's other schedulers by name.",
                                   "linear")
    weight_decay: float = setting("AdamW weight decay.", 0.0)
    max_grad_norm: float = setting("Gradient clipping norm.", 1.0)
    per_device_train_batch_size: int = setting("Sequences per device per forward pass (8: one group of the "
                                             "paper's G = 8; with gradient checkpointing and the paper's pixel "
                                             "budget it fits a 3B model on an 80 GB GPU).", 8)
    gradient_accumulation_steps: int = setting("Forward passes accumulated into one optimiser step.", 1)
    max_pixels: int = setting("Largest image area (pixels) fed to the vision tower, at most the model's own "
                            "limit; the paper's 401408 (512 image tokens on Qwen2.5-VL, whose own limit of ~12.8 M "
                            "pixels means up to ~16k tokens per image); 0 keeps the model's own.", 401_408)
    min_pixels: int = setting("Smallest image area (pixels) fed to the vision tower; 0 keeps the model's own.", 0)
    precision: str = setting("auto: bf16 on GPUs that support it, fp32 on CPU; or force fp32 / bf16 / fp16. Full "
                           "fine-tuning without DeepSpeed ZeRO keeps fp32 master weights and computes in bf16/fp16 "
                           "(16 bytes per parameter with AdamW: ~60 GB for 3B); ZeRO shards them over GPUs.", "auto")
    gradient_checkpointing: bool = setting("Recompute activations in the backward pass: a fraction of the memory "
                                         "(a 3B model's 8 x 512-token groups fit on one 80 GB GPU), ~10-30% "
                                         "slower. The tiny demo presets turn it off.", True)
    save_steps: int = setting("Save a checkpoint (and record it) every this many steps; 0 saves only at the end.", 25)
    save_total_limit: int = setting("Most checkpoints kept on disk (older ones are deleted); 0 keeps all.", 3)
    seed: int = setting("Random seed (sampling, LoRA init, data order).", 0)
    gpus: int = setting("GPUs to launch on: 0 runs on CPU, 1 on one GPU, more under accelerate launch. Fewer than "
                      "the machine has: the launch makes only those visible (CUDA_VISIBLE_DEVICES).", 0)
    gpu_ids: str = setting("Which GPUs to use, e.g. '2,3' (as many as gpus); empty takes the first gpus visible "
                         "ones.", "")
    cpu_processes: int = setting("With gpus=0: train in this many CPU processes (DDP over gloo, under accelerate "
                               "launch); 1 is one plain process. Runs the distributed path on a machine without "
                               "GPUs (tests, debugging); slower than one process.", 1)
    deepspeed_stage: int = setting("With more than one GPU: DeepSpeed ZeRO stage 2 or 3, or 0 for plain DDP.", 2)
    launcher: str = setting("local: run on this machine; slurm: submit an sbatch script to a Slurm cluster (the "
                          "job waits for it; cancel runs scancel). The workbench home must be on a filesystem "
                          "every node sees.", "local")
    nodes: int = setting("Machines to train on (Slurm); gpus then counts the GPUs of each machine.", 1)
    slurm_partition: str = setting("Slurm partition to submit to; empty uses the cluster's default.", "")
    slurm_time: str = setting("Slurm time limit, e.g. 24:00:00; empty uses the partition's.", "")
    run_name: str = setting("Name shown for the run; empty picks one from the model and data.", "")
    trl_args: dict[str, Any] = setting("Other settings of TRL's GRPOConfig / SFTConfig by their TRL names (e.g. "
                                     "top_k, mask_truncated_completions), passed to TRL unchanged.",
                                     default_factory=dict)

    def __post_init__(self) -> None:
        _check_upper_bounds(self)  # first: nothing below should work with a value like 10**12
        _require(bool(self.model and self.model.strip()), "model is empty: give 'tiny', a model folder or a hub id")
        _require(self.finetune in FINETUNE_MODES, f"finetune={self.finetune!r}: use one of {FINETUNE_MODES}")
        _require(self.lora_r >= 1, f"lora_r={self.lora_r}: use a rank of at least 1 (8 or 16 is typical)")
        _require(self.lora_alpha > 0, f"lora_alpha={self.lora_alpha}: use a positive value (e.g. 2 x lora_r)")
        _require(0.0 <= self.lora_dropout < 1.0, f"lora_dropout={self.lora_dropout}: use a value in [0, 1)")
        try:
            re.compile(self.lora_target)
        except re.error as exc:
            raise ConfigError(f"lora_target {self.lora_target!r} is not a valid regex ({exc}); e.g. "
                              f"{LANGUAGE_MODEL_LORA_TARGET}") from None
        _require(self.learning_rate > 0, f"learning_rate={self.learning_rate}: use a positive value (1e-5 .. 1e-4)")
        _require(self.learning_rate < 1, f"learning_rate={self.learning_rate} is far too large; use 1e-6 .. 1e-3")
        _require(self.warmup_steps >= 0, f"warmup_steps={self.warmup_steps}: use 0 or more")
        _require(self.lr_scheduler_type in LR_SCHEDULERS,
                 f"lr_scheduler_type={self.lr_scheduler_type!r}: use one of {LR_SCHEDULERS}")
        _require(self.weight_decay >= 0, f"weight_decay={self.weight_decay}: use 0 or more")
        _require(self.max_grad_norm > 0, f"max_grad_norm={self.max_grad_norm}: use a positive value (1.0)")
        _require(self.per_device_train_batch_size >= 1,
                 f"per_device_train_batch_size={self.per_device_train_batch_size}: use 1 or more")
        _require(self.gradient_accumulation_steps >= 1,
                 f"gradient_accumulation_steps={self.gradient_accumulation_steps}: use 1 or more")
        _require(self.min_pixels == 0 or self.min_pixels >= 28 * 28,
                 f"min_pixels={self.min_pixels}: use 0 (model default) or at least 784 (28 x 28)")
        _require(self.max_pixels == 0 or self.max_pixels >= max(self.min_pixels, 28 * 28),
                 f"max_pixels={self.max_pixels} is below min_pixels={self.min_pixels} (or 784); raise max_pixels "
                 "or use 0 for the model's own setting")
        _require(self.precision in PRECISIONS, f"precision={self.precision!r}: use one of {PRECISIONS}")
        _require(self.save_steps >= 0, f"save_steps={self.save_steps}: use 0 (end only) or a positive interval")
        _require(self.save_total_limit >= 0, f"save_total_limit={self.save_total_limit}: use 0 (keep all) or more")
        _require(self.gpus >= 0, f"gpus={self.gpus}: use 0 for CPU or the number of GPUs")
        _require(self.cpu_processes >= 1, f"cpu_processes={self.cpu_processes}: use 1 (one process) or more")
        _require(self.gpus == 0 or self.cpu_processes == 1,
                 f"cpu_processes={self.cpu_processes} is for CPU training; with gpus={self.gpus} set it to 1")
        _require(self.launcher in LAUNCHERS, f"launcher={self.launcher!r}: use one of {LAUNCHERS}")
        _require(self.nodes >= 1, f"nodes={self.nodes}: use 1 or more")
        _require(self.nodes == 1 or self.launcher == "slurm",
                 f"nodes={self.nodes} needs launcher=slurm (a multi-machine launch); or use nodes=1")
        _require(self.launcher == "local" or not self.gpu_ids,
                 f"gpu_ids={self.gpu_ids!r} with launcher=slurm: Slurm gives each node its GPUs; leave gpu_ids empty")
        ids = [part.strip() for part in self.gpu_ids.split(",") if part.strip()]
        _require(all(part.isdigit() for part in ids) and len(set(ids)) == len(ids),
                 f"gpu_ids={self.gpu_ids!r}: give distinct GPU numbers separated by commas, e.g. '0,1'")
        _require(not ids or len(ids) == self.gpus,
                 f"gpu_ids={self.gpu_ids!r} names {len(ids)} GPU(s) but gpus={self.gpus}; name exactly gpus of them "
                 "or leave gpu_ids empty")
        _require(self.deepspeed_stage in DEEPSPEED_STAGES,
                 f"deepspeed_stage={self.deepspeed_stage}: use 2 or 3 (ZeRO), or 0 for plain DDP")
        _require(not (self.gpus == 0 and self.precision in ("bf16", "fp16")),
                 f"precision={self.precision} needs a GPU; with gpus=0 use auto or fp32")
        _require(self.init_adapter is None or Path(self.init_adapter).is_dir(),
                 f"init_adapter {self.init_adapter} is not a folder; give a LoRA adapter folder (with "
                 "adapter_config.json) or leave it empty")
        _require(isinstance(self.trl_args, dict), "trl_args: give a JSON object of TRL settings, e.g. {\"top_k\": 50}")
        check_trl_args(self.trl_args, {f.name for f in fields(self)}, self.KIND, error=ConfigError)

    # -- serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (tuples become lists) plus the job kind."""
        values = json.loads(json.dumps(asdict(self)))
        return {"kind": self.KIND, **values}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainJobConfig":
        """A config from its JSON form; TRL's names for our settings work too (see trainers.trl_names)."""
        values = dict(values)
        kind = values.pop("kind", cls.KIND)
        _require(kind == cls.KIND, f"this is a {kind!r} config, not a {cls.KIND!r} one")
        own = {f.name: f for f in fields(cls)}
        values = normalize_keys(values, set(own), error=ConfigError)
        for name, value in values.items():  # `--data_files a.json` on the command line gives one string
            if isinstance(value, str) and typing.get_origin(own[name].type) is list:
                values[name] = [value]
        try:
            return cls(**values)
        except TypeError as exc:  # a value of the wrong type that the checks could not compare
            raise ConfigError(f"a {cls.KIND} setting has a value of the wrong type: {exc}") from None

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field's default, in the JSON form `to_dict` gives."""
        values = {f.name: f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
                  for f in fields(cls)}
        return json.loads(json.dumps(values))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        return path

    @property
    def world_size(self) -> int:
        """Training processes: one per GPU (on every node), or cpu_processes on the CPU."""
        return (self.gpus if self.gpus else self.cpu_processes) * self.nodes


def _check_files(paths: list[str], what: str, hint: str) -> None:
    _require(bool(paths), f"no {what} given; {hint}")
    for path in paths:
        _require(Path(path).is_file(), f"{what} {path} does not exist; {hint}")


@dataclass
class GrpoJobConfig(TrainJobConfig):
    """GRPO with the Visual-ARFT rewards: per-step samples (paper) or multi-turn tool episodes."""

    KIND = "grpo"

    data_files: list[str] = setting("Training files (JSON list or JSON Lines): Visual-ARFT search "
                                  "(image_path/problem/solution) or coding (type/image_path/problem/context/"
                                  "solution/gt) files, or MAT-style benchmark items for episodes.",
                                  default_factory=list)
    image_root: str | None = setting("Folder that relative image paths start from; empty means each data file's "
                                   "own folder.", None)
    mode: str = setting("steps: the paper's recipe, one completion per trajectory step with the chain so far in "
                      "the prompt; episodes: whole multi-turn episodes where the tools really run.", "steps")
    steps_preprocessing: str = setting("How steps mode builds a sample. paper: as the released training script, each "
                                       "image resized to 720x720 and the instructions at the start of the user turn; "
                                       "workbench: the image keeps its aspect ratio (shrunk only to max_pixels) and "
                                       "the instructions are a system message.", "paper")
    tools: list[str] = setting("Tools the model may call in episodes: code, search.", default_factory=lambda: ["code"])
    protocol: str = setting("tags: <search>/<code> tags (paper); native: Qwen3-VL <tool_call> JSON.", "tags")
    max_turns: int = setting("Most model turns per episode (the paper uses 5).", proto.MAX_TURNS)
    max_steps: int = setting("Optimiser steps to train.", 100)
    num_generations: int = setting("Completions sampled per prompt (G); the paper used 8.", 8)
    max_completion_length: int = setting("Most tokens per completion; in episodes this includes tool results "
                                       "(image tokens too).", 512)
    temperature: float = setting("Sampling temperature for rollouts.", 1.0)
    top_p: float = setting("Nucleus sampling mass for rollouts.", 1.0)
    beta: float = setting("KL penalty weight against the starting model; 0 turns KL off (and its metric).", 0.04)
    epsilon: float = setting("PPO-style clipping range of the probability ratio.", 0.2)
    loss_type: str = setting("grpo (paper), dapo, dr_grpo or bnpo loss normalisation.", "grpo")
    scale_rewards: str = setting("Advantage scaling: group (divide by the group's std, paper), batch or none.",
                               "group")
    rewards: dict[str, Any] = setting("Reward preset, weights and options (see RewardSpec); empty uses the "
                                    "workbench preset with the paper's sum: format 1 + answer F1 / problem / search "
                                    "similarity / code 0.9. {\"preset\": \"paper\"} gives the released reward "
                                    "code's values (steps mode).", default_factory=dict)
    stop_after_action: bool = setting("End each generation at the closing tag of its action (</search>, </code>, "
                                    "...), so the model cannot write the tool result itself.", True)
    max_items: int = setting("Use only the first N training rows (0 = all).", 0)
    eval_data_files: list[str] = setting("Held-out files in the same format as data_files; their mean reward is "
                                       "logged as eval_reward (before training and every eval_steps).",
                                       default_factory=list)
    eval_steps: int = setting("Measure the held-out reward every this many steps (0 = never).", 0)
    max_eval_items: int = setting("Use only the first N held-out rows (0 = all).", 0)
    num_generations_eval: int = setting("Completions sampled per held-out row at each evaluation (0 = "
                                        "num_generations); fewer samples of more rows measure a policy with less "
                                        "noise for the same cost.", 0)
    shuffle_dataset: bool = setting("Shuffle the training rows.", True)
    search_backend: str = setting("Search backend for the search tool in episodes: local (BM25 corpus, free) or "
                                "serpapi (web, paid per call).", "local")
    search_corpus: str | None = setting("JSONL corpus for the local search backend.", None)
    search_mode: str = setting("Search cache policy: cache-first, offline (cache only) or live.", "cache-first")
    use_vllm: bool = setting("Generate rollouts with vLLM colocated on the training GPUs (needs gpus >= 1 and "
                           "vllm installed).", False)
    vllm_gpu_memory_utilization: float = setting("Share of GPU memory vLLM may take in colocate mode.", 0.3)
    vllm_mode: str = setting("colocate: vLLM inside the training processes, sharing their GPUs; server: the job "
                           "starts `trl vllm-serve` on GPUs of its own (vllm_server_gpus, after the training "
                           "GPUs) and stops it when training ends (7B and up).", "colocate")
    vllm_server_gpus: int = setting("GPUs of the vLLM server in server mode (its tensor-parallel size).", 1)
    vllm_server_port: int = setting("Loopback port of the vLLM server in server mode.", 8000)
    log_traces_every: int = setting("Save one sampled group of rollouts (all G samples) every this many steps; "
                                  "0 saves none.", 1)
    trace_groups: int = setting("Groups saved at each sampled step.", 1)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.data_files = [str(p) for p in self.data_files]
        self.tools = list(self.tools)
        _check_files(self.data_files, "training data file",
                     "add a Visual-ARFT-format JSON/JSONL file to data_files")
        _require(self.image_root is None or Path(self.image_root).is_dir(),
                 f"image_root {self.image_root} is not a folder; give the folder images are relative to, or leave "
                 "it empty")
        _require(self.mode in GRPO_MODES, f"mode={self.mode!r}: use steps (paper) or episodes (multi-turn tools)")
        _require(self.steps_preprocessing in STEP_PREPROCESSING,
                 f"steps_preprocessing={self.steps_preprocessing!r}: use paper (720x720, instructions in the user "
                 "turn) or workbench (aspect kept, system message)")
        unknown = [t for t in self.tools if t not in proto.TOOL_ARGUMENT]
        _require(not unknown, f"tools {unknown} are unknown; choose from {list(proto.TOOL_ARGUMENT)}")
        _require(self.mode == "steps" or bool(self.tools),
                 "episodes mode needs at least one tool (code or search); use mode=steps to train without tools")
        _require(self.protocol in proto.PROTOCOLS, f"protocol={self.protocol!r}: use tags or native")
        _require(1 <= self.max_turns <= 20, f"max_turns={self.max_turns}: use 1..20 (the paper uses 5)")
        _require(self.max_steps >= 1, f"max_steps={self.max_steps}: use at least 1")
        _require(self.num_generations >= 2,
                 f"num_generations={self.num_generations}: GRPO compares samples within a group; use at least 2")
        batch = self.per_device_train_batch_size * self.gradient_accumulation_steps * self.world_size
        _require(batch % self.num_generations == 0,
                 f"per_device_train_batch_size x gradient_accumulation_steps x devices = {batch} is not divisible by "
                 f"num_generations={self.num_generations}; make the batch a multiple of {self.num_generations}: "
                 f"use per_device_train_batch_size={self._suggest_batch()}")
        _require(self.max_completion_length >= 8,
                 f"max_completion_length={self.max_completion_length}: use at least 8 tokens")
        _require(self.temperature > 0, f"temperature={self.temperature}: GRPO needs sampling; use a value > 0")
        _require(0 < self.top_p <= 1, f"top_p={self.top_p}: use a value in (0, 1]")
        _require(self.beta >= 0, f"beta={self.beta}: use 0 (no KL) or a positive weight such as 0.04")
        _require(0 < self.epsilon < 1, f"epsilon={self.epsilon}: use a clipping range in (0, 1), e.g. 0.2")
        _require(self.loss_type in LOSS_TYPES, f"loss_type={self.loss_type!r}: use one of {LOSS_TYPES}")
        _require(self.scale_rewards in SCALE_REWARDS, f"scale_rewards={self.scale_rewards!r}: use {SCALE_REWARDS}")
        try:
            spec = RewardSpec.from_dict(self.rewards)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"rewards: {exc}") from None
        _require(any(spec.weights().values()), "rewards: every weight is 0, so there is nothing to learn; set at "
                                               "least one weight (format and answer_f1 are the paper's)")
        _require(spec.preset != "paper" or self.mode == "steps",
                 "rewards: the paper preset scores one step against its solution, which episodes have not; use "
                 "mode=steps, or the workbench preset for episodes")
        _require(self.max_items >= 0, f"max_items={self.max_items}: use 0 (all rows) or a positive count")
        self.eval_data_files = [str(p) for p in self.eval_data_files]
        _require(self.eval_steps >= 0, f"eval_steps={self.eval_steps}: use 0 (no held-out reward) or more")
        _require(self.max_eval_items >= 0, f"max_eval_items={self.max_eval_items}: use 0 (all rows) or more")
        eval_batch = self.per_device_train_batch_size * self.world_size
        _require(self.num_generations_eval >= 0 and eval_batch % (self.num_generations_eval or 1) == 0,
                 f"num_generations_eval={self.num_generations_eval}: use 0 (same as num_generations) or a divisor of "
                 f"per_device_train_batch_size x devices = {eval_batch}")
        if self.eval_steps:
            _check_files(self.eval_data_files, "held-out data file",
                         "add held-out items to eval_data_files or set eval_steps=0")
        _require(not self.use_vllm or self.gpus >= 1, "use_vllm needs GPUs; set gpus >= 1 or turn use_vllm off")
        _require(not (self.mode == "episodes" and self.gpus > 1 and self.deepspeed_stage == 3 and not self.use_vllm),
                 "deepspeed_stage=3 in episodes mode needs use_vllm=true: ZeRO-3 gathers the sharded weights on "
                 "every rank for each generation, but each rank runs as many tool turns as its own episodes need, "
                 "so the ranks wait for each other forever; turn use_vllm on (generation outside DeepSpeed), or "
                 "use deepspeed_stage=2, or mode=steps")
        _require(self.vllm_mode in VLLM_MODES, f"vllm_mode={self.vllm_mode!r}: use one of {VLLM_MODES}")
        _require(self.vllm_mode == "colocate" or self.use_vllm,
                 f"vllm_mode={self.vllm_mode} generates with vLLM: turn use_vllm on, or use vllm_mode=colocate")
        _require(self.vllm_server_gpus >= 1, f"vllm_server_gpus={self.vllm_server_gpus}: use 1 or more")
        _require(not (self.use_vllm and self.vllm_mode == "server" and self.launcher == "slurm"),
                 "vllm_mode=server is not available with launcher=slurm yet (the server would need its own node); "
                 "use vllm_mode=colocate on Slurm, or launcher=local")
        _require(1024 <= self.vllm_server_port <= 65535,
                 f"vllm_server_port={self.vllm_server_port}: use a free port in 1024..65535")
        _require(0 < self.vllm_gpu_memory_utilization < 1,
                 f"vllm_gpu_memory_utilization={self.vllm_gpu_memory_utilization}: use a share in (0, 1)")
        _require(self.search_backend in SEARCH_BACKENDS,
                 f"search_backend={self.search_backend!r}: use one of {SEARCH_BACKENDS}")
        _require(self.search_mode in SEARCH_MODES, f"search_mode={self.search_mode!r}: use one of {SEARCH_MODES}")
        _require(self.search_corpus is None or Path(self.search_corpus).is_file(),
                 f"search_corpus {self.search_corpus} does not exist; give a JSONL corpus file or leave it empty")
        _require(self.log_traces_every >= 0, f"log_traces_every={self.log_traces_every}: use 0 (none) or more")
        _require(self.trace_groups >= 1, f"trace_groups={self.trace_groups}: use 1 or more")

    def _suggest_batch(self) -> str:
        """The per-device batch sizes next to the current one whose total is a multiple of num_generations."""
        per_device_share = self.gradient_accumulation_steps * self.world_size
        unit = self.num_generations // math.gcd(self.num_generations, per_device_share)
        lower = (self.per_device_train_batch_size // unit) * unit
        upper = lower + unit
        return f"{lower} or {upper}" if lower else str(upper)

    def reward_spec(self) -> RewardSpec:
        return RewardSpec.from_dict(self.rewards)

    @property
    def episode_tools(self) -> tuple[str, ...]:
        """Tools live in rollouts (episodes mode only)."""
        return tuple(self.tools) if self.mode == "episodes" else ()


@dataclass
class SftJobConfig(TrainJobConfig):
    """Cold-start SFT on recorded traces, so a model learns the protocol before RL."""

    KIND = "sft"

    trace_runs: list[str] = setting("Run ids in the workbench store whose traces to train on.", default_factory=list)
    trace_files: list[str] = setting("JSONL trace exports (Trace.to_dict lines with a <file>.images/ folder).",
                                   default_factory=list)
    min_reward: float | None = setting("Keep only traces whose total reward is at least this (empty keeps all).",
                                     None)
    only_answered: bool = setting("Keep only episodes that ended with an <answer>.", True)
    tools: list[str] = setting("Tools named in the system prompt, as in the RL run that follows.",
                             default_factory=lambda: ["code"])
    protocol: str = setting("Protocol of the traces to keep and of the system prompt: tags or native.", "tags")
    max_steps: int = setting("Optimiser steps; 0 trains for `num_train_epochs` passes over the traces instead.", 0)
    num_train_epochs: float = setting("Passes over the traces when max_steps is 0.", 3.0)
    max_length: int = setting("Longest tokenised conversation; longer ones are cut at the end.", 2048)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.trace_runs, self.trace_files, self.tools = list(self.trace_runs), list(self.trace_files), list(self.tools)
        _require(bool(self.trace_runs or self.trace_files),
                 "no traces given: add run ids to trace_runs or JSONL exports to trace_files")
        for path in self.trace_files:
            _require(Path(path).is_file(), f"trace file {path} does not exist; export traces first "
                                           "(python -m workbench export --run RUN_ID --out FILE)")
        unknown = [t for t in self.tools if t not in proto.TOOL_ARGUMENT]
        _require(not unknown, f"tools {unknown} are unknown; choose from {list(proto.TOOL_ARGUMENT)}")
        _require(self.protocol in proto.PROTOCOLS, f"protocol={self.protocol!r}: use tags or native")
        _require(self.max_steps >= 0, f"max_steps={self.max_steps}: use 0 (train by epochs) or a positive count")
        _require(self.max_steps > 0 or self.num_train_epochs > 0,
                 f"num_train_epochs={self.num_train_epochs}: with max_steps=0 use num_train_epochs > 0")
        _require(self.max_length >= 64, f"max_length={self.max_length}: use at least 64 tokens")


CONFIG_CLASSES: dict[str, type[TrainJobConfig]] = {"grpo": GrpoJobConfig, "sft": SftJobConfig}


def config_from_dict(values: dict[str, Any]) -> TrainJobConfig:
    """The config of the kind named by values["kind"] (grpo or sft)."""
    kind = values.get("kind")
    _require(kind in CONFIG_CLASSES, f"config kind {kind!r} is unknown; use one of {sorted(CONFIG_CLASSES)}")
    return CONFIG_CLASSES[kind].from_dict(values)


def load_config(path: str | Path, kind: str | None = None) -> TrainJobConfig:
    """Read a config file written by `save` (or by hand); `kind` defaults to the file's own."""
    return config_from_dict(load_values(path, kind))


def load_values(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """A config file's raw values (with its kind), before they are checked."""
    path = Path(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    _require(isinstance(values, dict), f"config {path} must hold a JSON object")
    if kind is not None:
        values.setdefault("kind", kind)
        _require(values["kind"] == kind, f"config {path} is a {values['kind']!r} config; expected {kind!r}")
    return values
