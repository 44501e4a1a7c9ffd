"""A plain TRL GRPO script (not launched by the workbench, none of its configs) for the callback's tests and bench.

The embedded tiny Qwen3-VL model, a `tools=` tool `zoom` that returns an
image and a line of text, two reward functions and a small image dataset. An
untrained tiny model almost never writes a tool call, so `sequence_bias`
(a plain transformers generation setting, passed through GRPOConfig's
`generation_kwargs`) raises the logits of one tool-call token sequence right
after each assistant header: every turn calls `zoom`; TRL's tool loop runs
the first call for real (its image goes into the next turn's input) and,
with max_tool_calling_iterations=1, the rollout ends at the second turn's
call. Training, the tool loop and the logged completions are TRL's own.
"""

from pathlib import Path

from PIL import Image

ZOOM_IMAGE_COLOUR = (200, 10, 10)


def zoom(factor: int) -> list:
    """Zoom into the image.

    Args:
        factor: how much to zoom in.
    """
    return [{"type": "image", "image": Image.new("RGB", (40, 40), ZOOM_IMAGE_COLOUR)},
            {"type": "text", "text": f"zoomed {factor}x"}]


class ZoomEnvironment:
    """The same tool as a TRL `environment_factory` environment (one instance per rollout)."""

    def reset(self, **kwargs) -> None:
        self.calls = 0

    def zoom(self, factor: int) -> list:
        """Zoom into the image.

        Args:
            factor: how much to zoom in.
        """
        self.calls += 1
        return zoom(factor)


def length_reward(completions, **kwargs) -> list[float]:
    """One point per message of the completion (tool turns count).

    >>> length_reward([[{"role": "assistant"}], [{"role": "assistant"}, {"role": "tool"}]])
    [1.0, 2.0]
    """
    return [float(len(completion)) for completion in completions]


def constant_reward(completions, **kwargs) -> list[float]:
    """Half a point for every completion.

    >>> constant_reward([[], []])
    [0.5, 0.5]
    """
    return [0.5 for _ in completions]


def plain_grpo_trainer(output_dir: Path, *, steps: int, callbacks: list, generations: int = 2, batch: int = 2,
                       tools: str | None = "tools", lora: bool = False, log_completions: bool = False,
                       steps_per_generation: int | None = None):
    """A GRPOTrainer as anyone's own script builds it, on CPU.

    `tools`: "tools" (`tools=[zoom]`), "environment" (`environment_factory=ZoomEnvironment`) or None (single-turn);
    `lora`: a LoRA adapter on the language model's attention instead of full fine-tuning.
    """
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig, GRPOTrainer

    from workbench.backends.tiny import ensure_tiny_model

    path = str(ensure_tiny_model("qwen3_vl"))
    processor = AutoProcessor.from_pretrained(path, padding_side="left")
    processor.image_processor.size = {"shortest_edge": 28 * 28, "longest_edge": 56 * 56}
    model = AutoModelForImageTextToText.from_pretrained(path)
    tokenizer = processor.tokenizer
    head = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    call = tokenizer('<tool_call>\n{"name": "zoom", "arguments": {"factor": 2}}\n</tool_call><|im_end|>',
                     add_special_tokens=False)["input_ids"]
    sequence = head + call
    bias = [[sequence[:end], 100.0] for end in range(len(head) + 1, len(sequence) + 1)] if tools else []
    image = Image.new("RGB", (48, 48), (10, 200, 10))
    rows = [{"prompt": [{"role": "user", "content": [{"type": "image"},
                                                     {"type": "text", "text": f"What colour is it? ({i})"}]}],
             "image": image} for i in range(max(8, batch * steps))]
    args = GRPOConfig(output_dir=str(output_dir), use_cpu=True, per_device_train_batch_size=batch,
                      num_generations=generations, max_completion_length=128, max_steps=steps, logging_steps=1,
                      report_to=[], save_strategy="no", learning_rate=1e-4, max_tool_calling_iterations=1,
                      generation_kwargs={"sequence_bias": bias} if bias else None, disable_tqdm=True,
                      log_completions=log_completions, seed=0, steps_per_generation=steps_per_generation)
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=8, lora_alpha=16, target_modules=r".*language_model.*\.(q_proj|v_proj)",
                                 task_type="CAUSAL_LM")
    return GRPOTrainer(model=model, reward_funcs=[length_reward, constant_reward], args=args,
                       train_dataset=Dataset.from_list(rows), processing_class=processor, peft_config=peft_config,
                       tools=[zoom] if tools == "tools" else None,
                       environment_factory=ZoomEnvironment if tools == "environment" else None, callbacks=callbacks)
