"""GRPO training job: `python -m trainers.grpo --config FILE [--run-id R] [--job-id J] [--resume]`.

Builds TRL's GRPOTrainer for a `GrpoJobConfig` and runs it with the
workbench's logging:
- mode "steps" (the paper's recipe): single-turn samples cut from
  trajectories, each rewarded by the Visual-ARFT rewards for its step kind;
- mode "episodes" (multi-turn tool RL): whole episodes where TRL's tool loop
  calls the environment of trainers.tool_env, so code really runs in the
  sandbox and search really searches; tool-result tokens are masked from the
  loss by TRL; episode rewards come from workbench.rewards.
LoRA on the language model (or full fine-tuning), KL to the starting model,
checkpoints every `save_steps` (LoRA adapters) plus one at the end, all
recorded in the store; `--resume` continues from the last one.

`VisualArftGRPOTrainer` changes one detail of TRL's tool loop for the tag
protocol: when a turn was stopped at its action's closing tag, the
end-of-turn token is put back (masked from the loss like the tool result),
so the token sequence is exactly the chat template's rendering of the
conversation, as at inference and in SFT.
"""

import os
import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from trl import GRPOTrainer

from trainers import chat_format, data, modeling
from trainers.action_stops import ActionStops, generate_with_criteria
from trainers.arguments import grpo_arguments
from trainers.config import ConfigError, GrpoJobConfig
from trainers.job_run import JobContext, cli_main, run_training
from trainers.logging_callback import BatchColumns, FinalCheckpointCallback, StoreLoggingCallback
from trainers.reward_adapters import SandboxCodeRunner, component_rewards
from trainers.tool_env import ToolBox, environment_factory, tool_use_metrics
from workbench import protocol
from workbench.rewards import describe
from workbench.store import Store
from workbench.versions import require_private_api


class VisualArftGRPOTrainer(GRPOTrainer):
    """GRPOTrainer with four local changes (see the module docstring for the first).

    - `close_turn_token_id`: the end-of-turn token put back before a tool result;
    - `action_stops`: closing tags that span tokens stop generation as strings
      (trainers.action_stops), in the transformers and the vLLM path alike;
    - `merge_lora_for_generation`: LoRA weights are merged into the base weights
      while sampling (and unmerged after), so each decoding step runs one matmul
      per layer instead of three; on CPU this makes rollouts ~1.5x faster. Only
      used for fp32 weights, where merge + unmerge is exact to rounding.
    - tool use per rollout batch (`tools/call_rate`, `tools/call_rate_degraded`, ...,
      trainers.tool_env.tool_use_metrics) goes into TRL's own metrics, so the
      held-out evaluation logs it too (`eval_tools/call_rate_degraded`), next to
      `eval_rewards/answer_f1/mean`. These are the main process's rollouts; for
      training steps the logging callback replaces the three plain rates with
      every rank's totals;
    - `eval_seed`: every held-out evaluation samples with the same random seed
      (common random numbers): an unchanged policy scores exactly the same, so
      the eval_reward curve shows what training changed, not sampling luck.
      Each rank adds its index, as TRL seeds training (a group's samples split
      over ranks must differ). Training's own random state is left as it was.
    """

    close_turn_token_id: int | None = None
    action_stops: ActionStops | None = None
    merge_lora_for_generation: bool = False
    eval_seed: int | None = None

    def evaluate(self, *args, **kwargs):
        if self.eval_seed is None:
            return super().evaluate(*args, **kwargs)
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.eval_seed + self.accelerator.process_index)
            return super().evaluate(*args, **kwargs)

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.environments:  # after the rollouts, before TRL logs this batch's metrics (train or eval_)
            mode = "train" if self.model.training else "eval"
            labels = [row.get("problem_labels") for row in inputs]
            for name, value in tool_use_metrics(self.environments, labels).items():
                self._metrics[mode][name].append(value)
        return output

    def _get_tool_suffix_ids(self, tool_messages):
        suffix = super()._get_tool_suffix_ids(tool_messages)
        if self.close_turn_token_id is None:
            return suffix
        return [self.close_turn_token_id, *suffix]

    def _generate_single_turn(self, *args, **kwargs):
        stops = self.action_stops if self.action_stops is not None and self.action_stops.by_string else None
        with ExitStack() as stack:
            if stops is not None and not self.use_vllm:  # vLLM gets them as sampling params (grpo_arguments)
                stack.enter_context(generate_with_criteria(self.accelerator.unwrap_model(self.model_wrapped),
                                                           stops.criteria()))
            if self.merge_lora_for_generation:
                stack.enter_context(_merged_lora(self.accelerator.unwrap_model(self.model)))
            completion_ids, logprobs = super()._generate_single_turn(*args, **kwargs)
        if stops is not None:
            completion_ids, logprobs, _ = stops.cut(completion_ids, logprobs)
        return completion_ids, logprobs


@contextmanager
def _merged_lora(model):
    with torch.no_grad():
        model.merge_adapter()
    try:
        yield
    finally:
        with torch.no_grad():
            model.unmerge_adapter()


@dataclass
class GrpoSetup:
    """A ready trainer and what the job needs around it."""

    trainer: VisualArftGRPOTrainer
    logging: StoreLoggingCallback | None
    toolbox: ToolBox | None
    rows: int
    reward_weights: dict[str, float]
    code_runner: SandboxCodeRunner | None = None

    def summary(self) -> dict:
        return {"rows": self.rows, "traces_logged": self.logging.traces_written if self.logging else 0,
                "logging_main_thread_s": round(self.logging.main_thread_seconds, 3) if self.logging else 0.0}

    def close(self) -> None:
        if self.logging is not None:
            self.logging.close()
        if self.toolbox is not None:
            self.toolbox.close()
        if self.code_runner is not None:
            self.code_runner.close()


def _load_rows(config: GrpoJobConfig, files: list[str] | None = None, limit: int | None = None) -> list:
    files = config.data_files if files is None else files
    limit = config.max_items if limit is None else limit
    if config.mode == "steps":
        rows = data.load_step_samples(files, config.image_root)
    else:
        rows = data.load_episode_items(files, config.image_root)
    return rows[:limit] if limit else rows


def build_grpo_trainer(config: GrpoJobConfig, output_dir: Path, *, store: Store | None = None,
                       run_id: str | None = None, job_id: str | None = None,
                       with_logging: bool = True) -> GrpoSetup:
    """The trainer for `config` writing checkpoints to `output_dir`; with_logging adds the store callback."""
    require_private_api("trl", GRPOTrainer, "_get_tool_suffix_ids", "_generate_single_turn",  # overridden below
                        "_generate_and_score_completions")
    model_path = modeling.resolve_model_path(config.model)
    processor = modeling.load_processor(model_path, config, padding_side="left")
    tools = config.episode_tools
    chat_format.prepare_processor(processor, config.protocol, tool_calls=bool(tools))
    stops = ActionStops(processor.tokenizer, config.protocol) if config.stop_after_action else None
    if stops is not None and stops.by_string and config.trl_args.get("mask_truncated_completions"):
        raise ConfigError("mask_truncated_completions would drop every turn that stopped at its closing tag: on this "
                          "tokenizer the tags span several tokens, so TRL sees no end-of-sequence token there; turn "
                          "mask_truncated_completions off, or stop_after_action off")
    spec = config.reward_spec()
    batch_columns = BatchColumns()
    code_runner = SandboxCodeRunner() if config.mode == "steps" and spec.executes_code() else None
    reward_funcs, weights = component_rewards(spec, mode=config.mode, protocol_name=config.protocol,
                                              code_runner=code_runner, on_batch=batch_columns.remember)
    # The arguments before the model: under DeepSpeed ZeRO-3 they register the config that makes
    # from_pretrained load each rank's shard only (zero.Init), not the whole model in every rank's RAM.
    arguments = grpo_arguments(config, output_dir, weights)
    model = modeling.load_model(model_path, config)
    stop_ids = stops.token_ids if stops is not None else []
    if stop_ids:
        eos = model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [processor.tokenizer.eos_token_id])
        model.generation_config.eos_token_id = eos + [i for i in stop_ids if i not in eos]

    rows = _load_rows(config)
    toolbox, factory, system = None, None, None
    if tools:
        toolbox = ToolBox(tools, search_backend=config.search_backend, search_corpus=config.search_corpus,
                          search_mode=config.search_mode)
        factory = environment_factory(toolbox, config.protocol)
        system = protocol.system_prompt(tools, config.protocol)
    max_pixels = modeling.effective_max_pixels(processor)
    dataset = data.build_dataset(rows, max_pixels=max_pixels, system=system,
                                 preprocessing=config.steps_preprocessing)
    eval_dataset = None
    if config.eval_steps:
        eval_rows = _load_rows(config, config.eval_data_files, config.max_eval_items)
        eval_dataset = data.build_dataset(eval_rows, max_pixels=max_pixels, system=system,
                                          preprocessing=config.steps_preprocessing)

    trainer = VisualArftGRPOTrainer(
        model=model, reward_funcs=reward_funcs, args=arguments,
        train_dataset=dataset, eval_dataset=eval_dataset, processing_class=processor,
        peft_config=modeling.lora_config(config),
        environment_factory=factory, callbacks=[FinalCheckpointCallback()])
    trainer.eval_seed = config.seed
    trainer.action_stops = stops
    if tools and config.protocol == "tags" and stops is not None and stops.strings:
        trainer.close_turn_token_id = processor.tokenizer.eos_token_id
    trainer.merge_lora_for_generation = (
        config.finetune == "lora" and not config.use_vllm and config.world_size == 1
        and modeling.torch_dtype(config) == torch.float32)
    reward_weights = {f.__name__: w for f, w in zip(reward_funcs, weights)}
    logging = None
    if with_logging:
        if store is None or run_id is None:
            raise ValueError("logging to the store needs a store and a run id")
        logging = StoreLoggingCallback(
            store, run_id, job_id=job_id, max_steps=config.max_steps, num_generations=config.num_generations,
            reward_weights=reward_weights, protocol_name=config.protocol, mode=config.mode,
            model_id=modeling.model_id_for(config.model), log_traces_every=config.log_traces_every,
            trace_groups=config.trace_groups, seed=config.seed, max_turns=config.max_turns,
            batch_columns=batch_columns).attach(trainer)
    return GrpoSetup(trainer, logging, toolbox, len(rows), reward_weights, code_runner)


def run_grpo(config: GrpoJobConfig, *, store: Store, run_id: str | None = None, job_id: str | None = None,
             resume: bool = False) -> str:
    """Train; returns the run id. The run row ends succeeded (summary) or failed (error)."""
    def build(context: JobContext) -> GrpoSetup:
        return build_grpo_trainer(config, context.output_dir, store=context.store, run_id=context.run_id,
                                  job_id=context.job_id)

    return run_training(config, build, store=store, run_id=run_id, job_id=job_id, resume=resume,
                        reward_spec=describe(config.reward_spec()))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # environment_factory is experimental in TRL 1.x
    return cli_main("grpo", run_grpo, argv)


if __name__ == "__main__":
    sys.exit(main())
