"""Cold-start SFT job: `python -m trainers.sft --config FILE [--run-id R] [--job-id J] [--resume]`.

Trains a model on recorded traces (trainers.sft_data) with TRL's
SFTTrainer, loss on the assistant turns only, so it learns the protocol
(think, act with a tag or tool call, answer) before RL. The chat template is
the one the multi-turn GRPO run will use (trainers.chat_format), so the
tokens learned here are the tokens RL samples. LoRA adapters (or the full
model) are checkpointed and recorded in the store; the last checkpoint is
what a GRPO config's `init_adapter` (LoRA) or `model` (full) points at.
Metrics (loss, learning rate, token accuracy, step time) go to the store
through the same logging callback as GRPO.
"""

import sys
from dataclasses import dataclass
from pathlib import Path

from trl import SFTTrainer

from trainers import chat_format, modeling
from trainers.arguments import sft_arguments
from trainers.config import SftJobConfig
from trainers.job_run import JobContext, cli_main, run_training
from trainers.logging_callback import FinalCheckpointCallback, StoreLoggingCallback
from trainers.sft_data import build_sft_dataset, collect_traces, recorded_system_prompt
from workbench import protocol
from workbench.store import Store


@dataclass
class SftSetup:
    trainer: SFTTrainer
    logging: StoreLoggingCallback | None
    traces: int

    def summary(self) -> dict:
        return {"traces": self.traces}

    def close(self) -> None:
        if self.logging is not None:
            self.logging.close()


def build_sft_trainer(config: SftJobConfig, output_dir: Path, *, store: Store | None = None,
                      run_id: str | None = None, job_id: str | None = None, with_logging: bool = True) -> SftSetup:
    model_path = modeling.resolve_model_path(config.model)
    processor = modeling.load_processor(model_path, config, padding_side="right")
    chat_format.prepare_processor(processor, config.protocol, tool_calls=True)
    tools = tuple(config.tools)
    default_system = protocol.system_prompt(tools, config.protocol)

    def system(trace) -> str:
        text = recorded_system_prompt(trace) or default_system
        return chat_format.system_prompt_with_tools(processor, text, tools, config.protocol)

    sources = collect_traces(config, store)
    dataset = build_sft_dataset(sources, system, max_pixels=modeling.effective_max_pixels(processor))
    arguments = sft_arguments(config, output_dir)  # before the model: ZeRO-3 then loads shards (zero.Init)
    model = modeling.load_model(model_path, config)
    trainer = SFTTrainer(model=model, args=arguments, train_dataset=dataset,
                         processing_class=processor, peft_config=modeling.lora_config(config),
                         callbacks=[FinalCheckpointCallback()])
    logging = None
    if with_logging:
        if store is None or run_id is None:
            raise ValueError("logging to the store needs a store and a run id")
        logging = StoreLoggingCallback(store, run_id, job_id=job_id, max_steps=config.max_steps,
                                       model_id=modeling.model_id_for(config.model), log_traces_every=0,
                                       protocol_name=config.protocol, seed=config.seed).attach(trainer)
    return SftSetup(trainer, logging, len(sources))


def run_sft(config: SftJobConfig, *, store: Store, run_id: str | None = None, job_id: str | None = None,
            resume: bool = False) -> str:
    """Train on the traces; returns the run id (the run row ends succeeded or failed)."""
    def build(context: JobContext) -> SftSetup:
        return build_sft_trainer(config, context.output_dir, store=context.store, run_id=context.run_id,
                                 job_id=context.job_id)

    return run_training(config, build, store=store, run_id=run_id, job_id=job_id, resume=resume)


def main(argv: list[str] | None = None) -> int:
    return cli_main("sft", run_sft, argv)


if __name__ == "__main__":
    sys.exit(main())
