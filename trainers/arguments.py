"""TRL's training arguments for a workbench job config: `grpo_arguments` (GRPOConfig), `sft_arguments` (SFTConfig).

Our settings that mirror TRL's go across under TRL's names; the ones the
workbench manages (output folder, logging, checkpoints, evaluation
schedule, CPU/GPU precision) are set here; `trl_args` passes through last.
Kept apart from the trainers so the pre-launch check can build the
arguments without importing a trainer.
"""

from pathlib import Path

from trl import GRPOConfig, SFTConfig

from trainers import modeling
from trainers.action_stops import vllm_stop_kwargs
from trainers.config import GrpoJobConfig, SftJobConfig


def grpo_arguments(config: GrpoJobConfig, output_dir: Path, reward_weights: list[float]) -> GRPOConfig:
    return GRPOConfig(
        output_dir=str(output_dir), use_cpu=config.gpus == 0, **modeling.precision_flags(config),
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, num_generations=config.num_generations,
        max_completion_length=config.max_completion_length, temperature=config.temperature, top_p=config.top_p,
        beta=config.beta, epsilon=config.epsilon, loss_type=config.loss_type, scale_rewards=config.scale_rewards,
        learning_rate=config.learning_rate, warmup_steps=config.warmup_steps,
        lr_scheduler_type=modeling.lr_scheduler_type(config), weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm, max_steps=config.max_steps, seed=config.seed,
        reward_weights=reward_weights, shuffle_dataset=config.shuffle_dataset, logging_steps=1, report_to=[],
        save_strategy="steps", save_steps=config.save_steps or config.max_steps,
        save_total_limit=config.save_total_limit or None, activation_checkpointing=config.gradient_checkpointing,
        max_tool_calling_iterations=config.max_turns - 1 if config.mode == "episodes" else None,
        **_eval_arguments(config),
        use_vllm=config.use_vllm, vllm_mode=config.vllm_mode, **_vllm_server_arguments(config),
        vllm_gpu_memory_utilization=config.vllm_gpu_memory_utilization,
        dataloader_num_workers=0, disable_tqdm=True, **_generation_arguments(config))


def _vllm_server_arguments(config: GrpoJobConfig) -> dict:
    """Where TRL finds the job's own vLLM server (started beside the trainer: trainers.vllm_server)."""
    if not (config.use_vllm and config.vllm_mode == "server"):
        return {}
    return {"vllm_server_host": "127.0.0.1", "vllm_server_port": config.vllm_server_port}


def _generation_arguments(config: GrpoJobConfig) -> dict:
    """trl_args, with vLLM told to stop at the action tags (the transformers path stops in the trainer)."""
    arguments = dict(config.trl_args)
    if config.use_vllm and config.stop_after_action:
        arguments["generation_kwargs"] = {**vllm_stop_kwargs(config.protocol),
                                          **(arguments.get("generation_kwargs") or {})}
    return arguments


def _eval_arguments(config: GrpoJobConfig) -> dict:
    if not config.eval_steps:
        return {}
    return {"eval_strategy": "steps", "eval_steps": config.eval_steps, "eval_on_start": True,
            "per_device_eval_batch_size": config.per_device_train_batch_size,
            "num_generations_eval": config.num_generations_eval or None}


def sft_arguments(config: SftJobConfig, output_dir: Path) -> SFTConfig:
    steps = {"max_steps": config.max_steps} if config.max_steps else {"num_train_epochs": config.num_train_epochs}
    return SFTConfig(
        output_dir=str(output_dir), use_cpu=config.gpus == 0, **modeling.precision_flags(config), **steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, learning_rate=config.learning_rate,
        warmup_steps=config.warmup_steps, lr_scheduler_type=modeling.lr_scheduler_type(config),
        weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        seed=config.seed, max_length=config.max_length, assistant_only_loss=True, remove_unused_columns=False,
        logging_steps=1, report_to=[], save_strategy="steps", save_steps=config.save_steps or 10 ** 9,
        save_total_limit=config.save_total_limit or None, activation_checkpointing=config.gradient_checkpointing,
        dataloader_num_workers=0, disable_tqdm=True, **config.trl_args)
