"""Loading the model and processor a training job trains, and its LoRA setup.

Owns: resolving a model spec ('tiny', 'tiny-qwen3-vl', a folder, a hub id)
to something `from_pretrained` loads; the processor with the job's pixel
budget and padding side; the dtype for the precision setting; the starting
LoRA adapter (`init_adapter`: keeps training under LoRA, merged for full
fine-tuning); the `LoraConfig` from the job's regex; and the cheap module
listing (model built on the meta device) that the pre-launch check uses.
"""

from pathlib import Path
from typing import Any

from trainers.config import TrainJobConfig
from workbench import settings


def resolve_model_path(spec: str) -> str:
    """A folder or hub id for `from_pretrained`; builds the embedded tiny model on first use."""
    from workbench.backends import DEMO_MODEL, TINY_MODELS

    if spec == DEMO_MODEL:
        return str(settings.demo_model_dir())
    if spec in TINY_MODELS:
        from workbench.backends.tiny import ensure_tiny_model

        return str(ensure_tiny_model(TINY_MODELS[spec]))
    return spec


def model_id_for(spec: str) -> str:
    """The id recorded in traces: the tiny model's name, a folder's name, or the hub id."""
    from workbench.backends import DEMO_MODEL, TINY_MODELS

    if spec == DEMO_MODEL or (Path(spec).is_dir() and Path(spec).resolve() == settings.DEMO_MODEL_DIR.resolve()):
        return settings.DEMO_MODEL_ID  # the demo model by name or by its folder (whose name is just "model")
    if spec in TINY_MODELS:
        return {"qwen2_5_vl": "tiny-qwen2.5-vl", "qwen3_vl": "tiny-qwen3-vl"}[TINY_MODELS[spec]]
    return Path(spec).name if Path(spec).is_dir() else spec


def compute_dtype(config: TrainJobConfig) -> Any:
    """The precision the model computes in: bf16 on GPUs that support it (auto), else as asked."""
    import torch

    if config.precision == "auto":
        if config.gpus and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[config.precision]


def zero_sharded(config: TrainJobConfig) -> bool:
    """DeepSpeed ZeRO runs the optimiser (it keeps fp32 master weights of half-precision models itself)."""
    return config.gpus > 1 and bool(config.deepspeed_stage)


def torch_dtype(config: TrainJobConfig) -> Any:
    """The dtype the weights are loaded in.

    Weights that the optimiser updates directly (full fine-tuning without
    ZeRO) stay fp32 master weights while mixed precision computes in
    bf16/fp16: a bf16 weight rounds away updates smaller than ~1/256 of it.
    Frozen weights under LoRA load in the compute precision (PEFT keeps the
    adapter in fp32); ZeRO keeps its own fp32 copy.
    """
    import torch

    dtype = compute_dtype(config)
    if config.finetune == "full" and dtype != torch.float32 and not zero_sharded(config):
        return torch.float32
    return dtype


def precision_flags(config: TrainJobConfig) -> dict[str, bool]:
    """bf16/fp16 switches for the TRL config (mixed precision only on GPUs)."""
    import torch

    dtype = compute_dtype(config)
    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}


def lr_scheduler_type(config: TrainJobConfig) -> str:
    """transformers' name for the config's schedule (constant keeps the warm-up)."""
    return {"constant": "constant_with_warmup"}.get(config.lr_scheduler_type, config.lr_scheduler_type)


def load_processor(model_path: str, config: TrainJobConfig, *, padding_side: str) -> Any:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_path, padding_side=padding_side)
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is not None and (config.max_pixels or config.min_pixels):
        size = dict(getattr(image_processor, "size", None) or {})
        if config.min_pixels:
            size["shortest_edge"] = config.min_pixels
        own_limit = size.get("longest_edge")
        if config.max_pixels:  # a ceiling: the default (the paper's) must not enlarge a small model's images
            size["longest_edge"] = min(config.max_pixels, own_limit) if own_limit else config.max_pixels
        image_processor.size = size
    return processor


def effective_max_pixels(processor: Any) -> int:
    """The pixel budget the processor resizes to (images are shrunk to it before processing)."""
    size = getattr(getattr(processor, "image_processor", None), "size", None) or {}
    return int(size.get("longest_edge") or 0)


def load_model(model_path: str, config: TrainJobConfig) -> Any:
    """The model to train, with `init_adapter` applied (trainable under LoRA, merged for full)."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=torch_dtype(config))
    if config.init_adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, config.init_adapter, is_trainable=config.finetune == "lora")
        if config.finetune == "full":
            model = model.merge_and_unload()
    return model


def lora_config(config: TrainJobConfig) -> Any:
    """The LoraConfig for a new adapter (None for full fine-tuning or when continuing `init_adapter`)."""
    if config.finetune != "lora" or config.init_adapter:
        return None
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.lora_target, task_type="CAUSAL_LM")


def module_names(model_path: str) -> list[tuple[str, str]]:
    """(name, class name) of every module, from the config alone (weights are not loaded)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    model_config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(model_config)
    return [(name, type(module).__name__) for name, module in model.named_modules()]
