"""Training job configs, pre-launch checks and launch commands (no training here)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainers.config import ConfigError, GrpoJobConfig, SftJobConfig, config_from_dict, load_config
from trainers.job_run import config_from_command_line
from trainers.launch import accelerate_yaml, build_command, format_command
from trainers.preflight import validate_for_launch
from workbench.fields import field_help
from workbench.store import Store


@pytest.fixture
def data_file(tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "a.png")
    rows = [{"type": "pre_answer", "image_path": "a.png", "problem": "What colour is it?", "context": "",
             "solution": "<think>red</think><answer>red</answer>", "gt": "red"}]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(rows))
    return str(path)


@pytest.mark.parametrize("changes, message", [
    ({"per_device_train_batch_size": 6, "num_generations": 4}, "not divisible by num_generations=4"),
    ({"per_device_train_batch_size": 6, "num_generations": 4}, "use per_device_train_batch_size=4 or 8"),
    ({"num_generations": 1}, "use at least 2"),
    ({"data_files": ["/nope/train.json"]}, "training data file /nope/train.json does not exist"),
    ({"data_files": []}, "no training data file given"),
    ({"lora_target": "(unclosed"}, "not a valid regex"),
    ({"mode": "rollouts"}, "use steps (paper) or episodes"),
    ({"mode": "episodes", "tools": []}, "episodes mode needs at least one tool"),
    ({"tools": ["calculator"]}, "tools ['calculator'] are unknown"),
    ({"protocol": "json"}, "use tags or native"),
    ({"temperature": 0.0}, "GRPO needs sampling"),
    ({"learning_rate": 0.0}, "learning_rate=0.0"),
    ({"finetune": "qlora"}, "finetune='qlora'"),
    ({"rewards": {"format": 0, "answer_f1": 0, "problem": 0, "search_similarity": 0, "code_constant": 0}},
     "nothing to learn"),
    ({"rewards": {"fromat": 1.0}}, "unknown reward setting"),
    ({"rewards": {"preset": "paper"}, "mode": "episodes"}, "the paper preset scores one step against its solution"),
    ({"rewards": {"preset": "paper", "code_ran": 1.0}}, "code_ran belong"),
    ({"steps_preprocessing": "square"}, "steps_preprocessing='square': use paper"),
    ({"max_pixels": 500}, "raise max_pixels"),
    ({"use_vllm": True}, "use_vllm needs GPUs"),
    ({"precision": "bf16"}, "needs a GPU"),
    ({"max_turns": 0}, "use 1..20"),
    ({"init_adapter": "/nope/adapter"}, "is not a folder"),
    ({"deepspeed_stage": 1}, "use 2 or 3"),
    ({"search_mode": "sometimes"}, "search_mode='sometimes'"),
    ({"eval_steps": 5}, "no held-out data file given"),
    ({"eval_steps": 5, "eval_data_files": ["/nope/test.json"]}, "held-out data file /nope/test.json does not exist"),
    ({"eval_steps": -1}, "eval_steps=-1"),
    ({"num_generations_eval": 3}, "a divisor of per_device_train_batch_size x devices = 8"),
    ({"num_generations_eval": -1}, "num_generations_eval=-1"),
])
def test_grpo_config_refuses_bad_values_with_a_fix(data_file, changes, message):
    values = {"data_files": [data_file], "per_device_train_batch_size": 8, "num_generations": 4, **changes}
    with pytest.raises(ConfigError, match=None) as caught:
        GrpoJobConfig(**values)
    assert message in str(caught.value)


def test_batch_divisibility_counts_accumulation_and_devices(data_file):
    config = GrpoJobConfig(data_files=[data_file], per_device_train_batch_size=2, gradient_accumulation_steps=2,
                           num_generations=4)
    assert config.num_generations == 4
    with pytest.raises(ConfigError, match="2 x 1 x 3|= 6"):
        GrpoJobConfig(data_files=[data_file], per_device_train_batch_size=2, gpus=3, num_generations=4)


@pytest.mark.parametrize("changes, message", [
    ({"trace_runs": [], "trace_files": []}, "no traces given"),
    ({"trace_files": ["/nope/traces.jsonl"]}, "does not exist"),
    ({"max_steps": 0, "num_train_epochs": 0}, "use num_train_epochs > 0"),
    ({"max_length": 10}, "at least 64"),
    ({"lr_scheduler_type": "exponential"}, "use one of ('linear', 'cosine', 'constant'"),
])
def test_sft_config_refuses_bad_values(changes, message):
    values = {"trace_runs": ["r1"], **changes}
    with pytest.raises(ConfigError) as caught:
        SftJobConfig(**values)
    assert message in str(caught.value)


def test_lr_scheduler_reaches_the_trainers_arguments(data_file, tmp_path):
    from transformers.trainer_utils import SchedulerType

    from trainers.arguments import grpo_arguments, sft_arguments

    sft = sft_arguments(SftJobConfig(trace_runs=["r1"], lr_scheduler_type="constant", warmup_steps=5), tmp_path)
    assert sft.lr_scheduler_type == SchedulerType.CONSTANT_WITH_WARMUP and sft.warmup_steps == 5
    grpo = grpo_arguments(GrpoJobConfig(data_files=[data_file], lr_scheduler_type="cosine", num_generations=4,
                                        per_device_train_batch_size=4), tmp_path, [1.0])
    assert grpo.lr_scheduler_type == SchedulerType.COSINE
    assert sft_arguments(SftJobConfig(trace_runs=["r1"]), tmp_path).lr_scheduler_type == SchedulerType.LINEAR


def test_num_generations_eval_reaches_the_grpo_arguments(data_file, tmp_path):
    from trainers.arguments import grpo_arguments

    values = {"data_files": [data_file], "num_generations": 4, "per_device_train_batch_size": 8, "eval_steps": 4,
              "eval_data_files": [data_file]}
    assert grpo_arguments(GrpoJobConfig(**values, num_generations_eval=2), tmp_path, [1.0]).num_generations_eval == 2
    same = grpo_arguments(GrpoJobConfig(**values), tmp_path, [1.0])
    assert (same.num_generations_eval or same.num_generations) == 4


def test_config_round_trips_through_dict_and_file(data_file, tmp_path):
    config = GrpoJobConfig(data_files=[data_file], mode="episodes", tools=["code"], rewards={"code_ran": 0.5},
                           num_generations=4, per_device_train_batch_size=4)
    values = config.to_dict()
    assert values["kind"] == "grpo" and json.loads(json.dumps(values)) == values
    assert config_from_dict(values) == config
    path = config.save(tmp_path / "job.json")
    assert load_config(path) == config
    with pytest.raises(ConfigError, match="'grpo' config; expected 'sft'"):
        load_config(path, kind="sft")
    with pytest.raises(ConfigError, match="unknown setting 'nmu_generations'.*did you mean num_generations"):
        GrpoJobConfig.from_dict({**values, "nmu_generations": 4})
    assert all(field_help(GrpoJobConfig).values()), "every field needs help text for the UI"
    assert all(field_help(SftJobConfig).values())


def test_configs_take_trls_own_names_and_the_old_names_still_load(data_file):
    trl_style = {"kind": "grpo", "data_files": [data_file], "num_generations": 3, "per_device_train_batch_size": 6,
                 "gradient_accumulation_steps": 2, "learning_rate": 1e-6, "beta": 0.0, "max_completion_length": 64,
                 "lr_scheduler_type": "cosine", "shuffle_dataset": False, "use_peft": False,
                 "max_tool_calling_iterations": 4}
    config = config_from_dict(trl_style)
    assert (config.per_device_train_batch_size, config.finetune, config.max_turns) == (6, "full", 5)
    assert config.lr_scheduler_type == "cosine" and config.shuffle_dataset is False and config.trl_args == {}
    old_style = {"kind": "grpo", "data_files": [data_file], "num_generations": 3, "per_device_batch_size": 6,
                 "lr_scheduler": "cosine", "shuffle": False, "eval_generations": 3}
    assert config_from_dict(old_style).per_device_train_batch_size == 6
    sft = config_from_dict({"kind": "sft", "trace_runs": ["r"], "epochs": 2, "model_name_or_path": "tiny"})
    assert sft.num_train_epochs == 2 and sft.model == "tiny"
    with pytest.raises(ConfigError, match="given twice"):
        config_from_dict({**old_style, "per_device_train_batch_size": 6})


@pytest.mark.parametrize("key, value, message", [
    ("max_prompt_length", 1024, "no max_prompt_length"),
    ("output_dir", "/tmp/x", "output_dir is set by the workbench"),
    ("report_to", "wandb", "metrics go to the workbench store"),
    ("per_device_train_batch_sise", 4, "did you mean per_device_train_batch_size"),
    ("totally_unknown_setting", 1, "not a workbench setting nor a field of TRL's GRPOConfig"),
])
def test_names_known_to_neither_or_managed_by_the_workbench_are_refused(data_file, key, value, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"kind": "grpo", "data_files": [data_file], "num_generations": 4, key: value})


def test_other_trl_fields_pass_through_to_trl_unchanged(data_file, tmp_path):
    from trainers.arguments import grpo_arguments, sft_arguments

    config = config_from_dict({"kind": "grpo", "data_files": [data_file], "num_generations": 4, "top_k": 7,
                               "mask_truncated_completions": True, "repetition_penalty": 1.1})
    assert config.trl_args == {"top_k": 7, "mask_truncated_completions": True, "repetition_penalty": 1.1}
    assert config_from_dict(config.to_dict()) == config  # the round trip keeps them
    arguments = grpo_arguments(config, tmp_path, [1.0])
    assert (arguments.top_k, arguments.mask_truncated_completions, arguments.repetition_penalty) == (7, True, 1.1)
    sft = config_from_dict({"kind": "sft", "trace_runs": ["r"], "packing": True})
    assert sft_arguments(sft, tmp_path).packing is True
    with pytest.raises(ConfigError, match="not a workbench setting nor a field of TRL's SFTConfig"):
        config_from_dict({"kind": "sft", "trace_runs": ["r"], "num_generations": 4})  # GRPO-only


def test_trl_refuses_a_bad_passed_through_value_before_launch(data_file):
    config = config_from_dict({"kind": "grpo", "data_files": [data_file], "num_generations": 4,
                               "optim": "no-such-optimizer"})
    with pytest.raises(ConfigError, match="TRL refuses the settings passed through"):
        validate_for_launch(config)


def test_preflight_refuses_a_lora_target_that_matches_nothing(data_file):
    config = GrpoJobConfig(data_files=[data_file], lora_target=r".*language_model.*\.qkv_proj")
    with pytest.raises(ConfigError) as caught:
        validate_for_launch(config)
    assert "matches no module" in str(caught.value) and "q_proj" in str(caught.value)


def test_preflight_accepts_the_default_and_keeps_the_vision_tower_out(data_file):
    from trainers.modeling import module_names, resolve_model_path
    from trainers.preflight import check_lora_target

    config = GrpoJobConfig(data_files=[data_file])
    validate_for_launch(config)  # no error
    chosen = check_lora_target(config, module_names(resolve_model_path("tiny")))
    assert chosen and all("language_model" in name for name in chosen)
    assert any(name.endswith("mlp.gate_proj") for name in chosen)
    assert not any("visual" in name for name in chosen)


def test_preflight_search_episodes_need_a_corpus_for_the_job_or_each_row(tmp_path):
    from workbench.benchmarks import mat_search_mini

    own, _ = mat_search_mini.generate(tmp_path / "own", 2, seed=4000, worlds=2)  # each question names its corpus
    shared, corpus = mat_search_mini.generate(tmp_path / "shared", 2, seed=4000)
    records = json.loads(shared.read_text())
    shared.write_text(json.dumps([{k: v for k, v in r.items() if k != "corpus"} for r in records]))
    values = {"mode": "episodes", "tools": ["search"], "num_generations": 2, "per_device_train_batch_size": 2}
    with pytest.raises(ConfigError, match="needs a corpus: 2 rows name none"):
        validate_for_launch(GrpoJobConfig(data_files=[str(shared)], **values))
    validate_for_launch(GrpoJobConfig(data_files=[str(shared)], search_corpus=str(corpus), **values))
    validate_for_launch(GrpoJobConfig(data_files=[str(own)], **values))


def test_preflight_checks_the_rows_against_the_mode(tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    items = tmp_path / "mat.json"
    items.write_text(json.dumps([{"id": 1, "question": "q", "answers": ["a"], "ori_image_path": "x.png",
                                  "processed_image_path": "x.png", "type": ["dark"], "split": "simple"}]))
    with pytest.raises(ConfigError, match="benchmark items train in mode=episodes"):
        validate_for_launch(GrpoJobConfig(data_files=[str(items)], mode="steps"))
    validate_for_launch(GrpoJobConfig(data_files=[str(items)], mode="episodes", tools=["code"]))
    missing_image = tmp_path / "rows.json"
    missing_image.write_text(json.dumps([{"image_path": "gone.png", "problem": "q",
                                          "solution": "<think>t</think><answer>a</answer>"}]))
    with pytest.raises(ConfigError, match="gone.png"):
        validate_for_launch(GrpoJobConfig(data_files=[str(missing_image)]))


def test_preflight_refuses_sft_without_matching_traces():
    store = Store()
    run_id = store.create_run("empty", "eval")
    with pytest.raises(ConfigError, match="no trace passes the filters"):
        validate_for_launch(SftJobConfig(trace_runs=[run_id]))
    with pytest.raises(ConfigError, match="not in the store"):
        validate_for_launch(SftJobConfig(trace_runs=["no-such-run"]))


def test_cpu_command_is_plain_python(data_file):
    config = GrpoJobConfig(data_files=[data_file])
    command = build_command(config, 0, run_id="r1", job_id="j1", resume=True)
    assert command[:3] == [sys.executable, "-m", "trainers.grpo"]
    assert command[command.index("--run-id") + 1] == "r1" and "--resume" in command
    assert config_from_command_line("grpo", None, command[command.index("--resume") + 1:]) == config
    assert "accelerate" not in format_command(command) and "--config" not in command  # the settings, not a path


def test_multi_gpu_command_uses_accelerate_with_a_deepspeed_zero_config(data_file):
    config = GrpoJobConfig(data_files=[data_file], per_device_train_batch_size=4, num_generations=4,
                           deepspeed_stage=3, use_vllm=True, gpus=1)
    command = build_command(config, 4)
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    assert command[command.index("--num_processes") + 1] == "4"
    launched = command[command.index("-m", 3) + 1]
    assert launched == "trainers.grpo" and "--run-id" in command  # every rank writes to one run
    yaml_text = Path(command[command.index("--config_file") + 1]).read_text()
    assert "distributed_type: DEEPSPEED" in yaml_text and "zero_stage: 3" in yaml_text
    assert "num_processes: 4" in yaml_text and "mixed_precision: 'bf16'" in yaml_text
    saved = config_from_command_line("grpo", None, command[command.index("--run-id") + 2:])
    assert saved.gpus == 4 and saved.use_vllm
    assert "distributed_type: MULTI_GPU" in accelerate_yaml(2, 0, "no")


def test_sft_command_runs_the_sft_module():
    command = build_command(SftJobConfig(trace_runs=["r1"]), 0)
    assert command[1:3] == ["-m", "trainers.sft"]


@pytest.mark.parametrize("changes, name", [
    ({"max_steps": 10**12}, "max_steps"),
    ({"per_device_train_batch_size": 10**9}, "per_device_train_batch_size"),
    ({"num_generations": 10**6}, "num_generations"),
    ({"max_completion_length": 10**9}, "max_completion_length"),
    ({"gradient_accumulation_steps": 10**7}, "gradient_accumulation_steps"),
    ({"lora_r": 10**6}, "lora_r"),
    ({"max_pixels": 10**12}, "max_pixels"),
    ({"temperature": 1e9}, "temperature"),
    ({"seed": 2**40}, "seed"),
])
def test_unbounded_training_settings_are_refused_with_the_limit(data_file, changes, name):
    values = {"data_files": [data_file], "per_device_train_batch_size": 8, "num_generations": 4, **changes}
    with pytest.raises(ConfigError) as caught:
        GrpoJobConfig(**values)
    message = str(caught.value)
    assert message.startswith(f"{name}=") and "over this workbench's limit" in message
    assert "use a value up to" in message


@pytest.mark.parametrize("changes", [{"max_steps": 10**12}, {"num_train_epochs": 1e9}, {"max_length": 10**9}])
def test_unbounded_sft_settings_are_refused(changes):
    with pytest.raises(ConfigError, match="over this workbench's limit"):
        SftJobConfig(trace_runs=["r1"], **changes)


def test_the_train_form_refuses_an_unbounded_setting_before_anything_launches(data_file):
    from workbench.ui import tab_train

    with pytest.raises(ValueError, match="max_steps=1000000000000 is over"):
        tab_train.train_config("grpo", {"data_files": data_file, "max_steps": 10**12, "num_generations": 4,
                                        "per_device_train_batch_size": 8})


@pytest.mark.parametrize("changes", [{"samples": 10**6, "temperature": 1.0}, {"max_new_tokens": 10**9},
                                     {"tool_workers": 10**4}])
def test_unbounded_rollout_settings_are_refused(changes):
    from workbench.agent.config import RunnerConfig

    with pytest.raises(ValueError, match="over the limit"):
        RunnerConfig(**changes)


@pytest.fixture
def eight_gpus(monkeypatch):
    """A machine showing 8 CUDA GPUs, as torch reports them to the launcher (nothing else is faked)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def _environment(command: list[str]) -> dict[str, str]:
    """What the job's process really gets: the argv run without a shell, as workbench.jobs runs it."""
    import subprocess

    start = command.index(sys.executable)
    probe = [*command[:start], sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"]
    return json.loads(subprocess.run(probe, capture_output=True, text=True, check=True).stdout)


def test_one_gpu_on_an_eight_gpu_machine_sees_one_gpu(data_file, eight_gpus):
    command = build_command(GrpoJobConfig(data_files=[data_file], gpus=1, deepspeed_stage=0), run_id="r1")
    assert command[:3] == ["env", "CUDA_VISIBLE_DEVICES=0", sys.executable]
    assert "accelerate.commands.launch" not in command
    assert _environment(command)["CUDA_VISIBLE_DEVICES"] == "0"
    assert "CUDA_VISIBLE_DEVICES=0" in format_command(command)  # the command shown is the one that runs


def test_fewer_gpus_than_visible_select_the_first_or_the_named_ones(data_file, eight_gpus, monkeypatch):
    two = build_command(GrpoJobConfig(data_files=[data_file], gpus=2, deepspeed_stage=0), run_id="r1")
    assert two[:2] == ["env", "CUDA_VISIBLE_DEVICES=0,1"] and "accelerate.commands.launch" in two
    assert two[two.index("--num_processes") + 1] == "2"
    named = build_command(GrpoJobConfig(data_files=[data_file], gpus=2, gpu_ids="5,3", deepspeed_stage=0))
    assert named[1] == "CUDA_VISIBLE_DEVICES=5,3"
    every = build_command(GrpoJobConfig(data_files=[data_file], gpus=8, deepspeed_stage=0))
    assert every[0] == sys.executable, "all GPUs: the environment is left alone"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")  # a masked machine: 8 shown as 4 by torch
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    masked = build_command(GrpoJobConfig(data_files=[data_file], gpus=1))
    assert masked[1] == "CUDA_VISIBLE_DEVICES=4"


def test_preflight_checks_the_gpu_selection(data_file, eight_gpus):
    from trainers.preflight import _check_hardware

    _check_hardware(GrpoJobConfig(data_files=[data_file], gpus=1))
    with pytest.raises(ConfigError, match="9 CUDA GPU|8 CUDA GPU"):
        _check_hardware(GrpoJobConfig(data_files=[data_file], gpus=9, deepspeed_stage=0))
    with pytest.raises(ConfigError, match=r"names GPU 8 but only 8 are visible \(0..7\)"):
        _check_hardware(GrpoJobConfig(data_files=[data_file], gpus=1, gpu_ids="8"))
    with pytest.raises(ConfigError, match="names 2 GPU"):
        GrpoJobConfig(data_files=[data_file], gpus=1, gpu_ids="1,2")
    with pytest.raises(ConfigError, match="cpu_processes=2 is for CPU training"):
        GrpoJobConfig(data_files=[data_file], gpus=1, cpu_processes=2)


def test_cpu_processes_launch_ddp_over_gloo(data_file):
    command = build_command(GrpoJobConfig(data_files=[data_file], cpu_processes=2), run_id="r1")
    assert command[:2] == ["env", "ACCELERATE_USE_CPU=true"]
    assert command[command.index("--num_processes") + 1] == "2"
    yaml_text = Path(command[command.index("--config_file") + 1]).read_text()
    assert "distributed_type: MULTI_GPU" in yaml_text and "mixed_precision: 'no'" in yaml_text
    assert int(command[command.index("--main_process_port") + 1]) > 0


def test_memory_defaults_suit_real_checkpoints_and_each_can_be_changed(data_file, tmp_path):
    from trainers.arguments import grpo_arguments
    from trainers.demo_data import click_to_train_config, demo_grpo_config

    default = GrpoJobConfig(data_files=[data_file])
    assert default.gradient_checkpointing and default.max_pixels == 401_408  # the paper's budget
    assert grpo_arguments(default, tmp_path, [1.0]).activation_checkpointing
    changed = GrpoJobConfig(data_files=[data_file], gradient_checkpointing=False, max_pixels=0)
    assert not grpo_arguments(changed, tmp_path, [1.0]).activation_checkpointing
    # the tiny demo presets keep their speed
    assert not click_to_train_config("demo", data_file, data_file).gradient_checkpointing
    demo = type("Demo", (), {"items_file": data_file})()
    assert not demo_grpo_config(demo, "tiny").gradient_checkpointing


def test_the_pixel_budget_is_a_ceiling_never_enlarging_a_small_models_images(data_file):
    from trainers import modeling

    path = modeling.resolve_model_path("tiny")
    own_config = GrpoJobConfig(data_files=[data_file], max_pixels=0)
    own = modeling.effective_max_pixels(modeling.load_processor(path, own_config, padding_side="left"))
    assert own == 112 * 112
    default = modeling.load_processor(path, GrpoJobConfig(data_files=[data_file]), padding_side="left")
    assert modeling.effective_max_pixels(default) == own  # 401408 is above the tiny model's own limit
    smaller = modeling.load_processor(path, GrpoJobConfig(data_files=[data_file], max_pixels=56 * 56),
                                      padding_side="left")
    assert modeling.effective_max_pixels(smaller) == 56 * 56


def test_full_fine_tuning_keeps_fp32_master_weights_unless_zero_does(data_file):
    import torch

    from trainers import modeling

    def load_dtype(**values):
        config = GrpoJobConfig(data_files=[data_file], precision="bf16", **values)
        return modeling.torch_dtype(config), modeling.precision_flags(config)["bf16"]

    assert load_dtype(finetune="full", gpus=1) == (torch.float32, True)  # fp32 weights, bf16 compute
    assert load_dtype(finetune="full", gpus=4, deepspeed_stage=0) == (torch.float32, True)  # plain DDP
    assert load_dtype(finetune="full", gpus=4, deepspeed_stage=2) == (torch.bfloat16, True)  # ZeRO's own fp32 copy
    assert load_dtype(finetune="lora", gpus=1) == (torch.bfloat16, True)  # frozen base; PEFT keeps LoRA in fp32


def test_zero3_episodes_without_vllm_are_refused_with_the_fix(data_file):
    values = dict(data_files=[data_file], mode="episodes", tools=["code"], gpus=4, deepspeed_stage=3)
    with pytest.raises(ConfigError, match="deepspeed_stage=3 in episodes mode needs use_vllm=true.*deepspeed_stage=2"):
        GrpoJobConfig(**values)
    assert GrpoJobConfig(**values, use_vllm=True).deepspeed_stage == 3
    assert GrpoJobConfig(**{**values, "deepspeed_stage": 2}).deepspeed_stage == 2


def test_training_arguments_exist_before_the_model_loads(data_file, tmp_path, monkeypatch):
    """Under ZeRO-3 the arguments register DeepSpeed's config; a model loaded before them is whole on every rank."""
    from trainers import grpo, modeling

    order = []
    real_arguments = grpo.grpo_arguments
    monkeypatch.setattr(grpo, "grpo_arguments", lambda *a, **k: order.append("arguments") or real_arguments(*a, **k))

    def load_model(*args, **kwargs):
        order.append("model")
        raise KeyboardInterrupt  # enough seen

    monkeypatch.setattr(modeling, "load_model", load_model)
    with pytest.raises(KeyboardInterrupt):
        grpo.build_grpo_trainer(GrpoJobConfig(data_files=[data_file], model="tiny"), tmp_path, with_logging=False)
    assert order == ["arguments", "model"]


def test_preflight_names_the_scale_out_installs(data_file, eight_gpus, monkeypatch):
    import importlib.util

    from trainers import preflight

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed"
                        else real_find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"pip install -r requirements-gpu.txt"):
        preflight._check_hardware(GrpoJobConfig(data_files=[data_file], gpus=2, deepspeed_stage=2))
    preflight._check_hardware(GrpoJobConfig(data_files=[data_file], gpus=2, deepspeed_stage=0))  # plain DDP
    with pytest.raises(ConfigError, match=r"vllm is not installed; make the vLLM environment: .*requirements-vllm"):
        preflight._check_hardware(GrpoJobConfig(data_files=[data_file], gpus=1, use_vllm=True))
    from importlib import metadata

    monkeypatch.setattr(metadata, "version", lambda name: "0.34.0" if name == "vllm" else "1")
    assert "vllm 0.34.0 is outside TRL 1.16's supported 0.22.0-0.31.0" in preflight.vllm_problem()
    monkeypatch.setattr(metadata, "version", lambda name: "0.31.0+cu129")
    assert preflight.vllm_problem() is None


def test_scale_out_requirements_follow_trls_own_ranges():
    """requirements-gpu/vllm pin versions inside what TRL 1.16 declares (its metadata and its vLLM check)."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement
    from packaging.version import Version

    from trainers.preflight import VLLM_RANGE

    root = Path(__file__).resolve().parent.parent
    pins = {}
    for name in ("requirements-gpu.txt", "requirements-vllm.txt"):
        for line in (root / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("-"):
                requirement = Requirement(line)
                pins[(name, requirement.name)] = Version(next(iter(requirement.specifier)).version)
    trl_extras = {Requirement(r).name: Requirement(r) for r in requires("trl") if "extra ==" in r}
    assert trl_extras["deepspeed"].specifier.contains(pins[("requirements-gpu.txt", "deepspeed")])
    assert trl_extras["vllm"].specifier.contains(pins[("requirements-vllm.txt", "vllm")])
    assert Version(VLLM_RANGE[0]) <= pins[("requirements-vllm.txt", "vllm")] <= Version(VLLM_RANGE[1])
    assert "requirements-gpu.txt" in (root / "README.md").read_text()


def test_the_vllm_environment_is_requirements_txt_but_for_what_vllm_pins():
    from packaging.requirements import Requirement

    root = Path(__file__).resolve().parent.parent

    def pins(name: str) -> dict[str, str]:
        lines = [line.split("#")[0].strip() for line in (root / name).read_text().splitlines()]
        return {Requirement(line).name.lower(): str(Requirement(line).specifier) for line in lines if line}

    app, vllm_env = pins("requirements.txt"), pins("requirements-vllm.txt")
    changed = {name for name in app if vllm_env.get(name) != app[name]}
    assert changed == {"torch", "torchvision", "transformers", "huggingface-hub", "numpy"}, changed
    assert set(vllm_env) - set(app) == {"vllm", "deepspeed"}


def test_vllm_server_mode_starts_trl_vllm_serve_on_its_own_gpus(data_file, eight_gpus, tmp_path, monkeypatch):
    from trainers.arguments import grpo_arguments

    config = GrpoJobConfig(data_files=[data_file], model="tiny", gpus=2, deepspeed_stage=0, use_vllm=True,
                           vllm_mode="server", vllm_server_gpus=2, vllm_server_port=8011, precision="fp32")
    command = build_command(config, run_id="r1")
    assert command[:4] == [sys.executable, "-m", "trainers.vllm_server", "http://127.0.0.1:8011/health"]
    first = command.index("--")
    second = command.index("--", first + 1)
    server, trainer = command[first + 1:second], command[second + 1:]
    assert server[:3] == ["env", "CUDA_VISIBLE_DEVICES=2,3", "VLLM_SERVER_DEV_MODE=1"]
    assert server[server.index("serve") - 1] == "vllm.entrypoints.cli.main"  # what `trl vllm-serve` runs
    for flag, value in (("--tensor-parallel-size", "2"), ("--host", "127.0.0.1"), ("--port", "8011")):
        assert server[server.index(flag) + 1] == value
    assert "--weight-transfer-config" in server  # TRL's weight sync to the server
    assert trainer[:2] == ["env", "CUDA_VISIBLE_DEVICES=0,1"] and "accelerate.commands.launch" in trainer
    saved = config_from_command_line("grpo", None, trainer[trainer.index("--run-id") + 2:])
    assert saved.vllm_mode == "server" and saved.vllm_server_port == 8011
    monkeypatch.undo()  # TRL's arguments look at the real (GPU-less) machine
    arguments = grpo_arguments(saved, tmp_path, [1.0])
    assert (arguments.vllm_mode, arguments.vllm_server_host, arguments.vllm_server_port) == ("server", "127.0.0.1",
                                                                                              8011)
    with pytest.raises(ConfigError, match="turn use_vllm on"):
        GrpoJobConfig(data_files=[data_file], vllm_mode="server")


def test_preflight_counts_the_vllm_servers_gpus(data_file, eight_gpus):
    from trainers.preflight import _check_hardware

    with pytest.raises(ConfigError, match="needs gpus \\+ vllm_server_gpus = 10 GPUs but 8 are visible"):
        _check_hardware(GrpoJobConfig(data_files=[data_file], gpus=8, deepspeed_stage=0, use_vllm=True,
                                      vllm_mode="server", vllm_server_gpus=2))


def _server_job(tmp_path, server: list[str], trainer_code: str) -> subprocess.CompletedProcess:
    port = _loopback_port()
    health = f"http://127.0.0.1:{port}/health"
    server = [part.replace("PORT", str(port)) for part in server]
    command = [sys.executable, "-m", "trainers.vllm_server", health, "--wait", "60", "--", *server, "--",
               sys.executable, "-c", trainer_code.replace("URL", health)]
    return subprocess.run(command, cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
                          timeout=120), port


def _loopback_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_server_runs_exactly_as_long_as_the_trainer(tmp_path):
    """trainers.vllm_server's lifecycle, with Python's http.server standing in for vLLM (it serves /health)."""
    import socket

    (tmp_path / "health").write_text("ok")
    stand_in = [sys.executable, "-m", "http.server", "PORT", "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    trainer = "import sys, urllib.request; urllib.request.urlopen('URL').read(); sys.exit(3)"
    done, port = _server_job(tmp_path, stand_in, trainer)
    assert done.returncode == 3, done.stderr  # the trainer's exit code; it reached the server while it ran
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)  # and the server is gone with it
    dead = [sys.executable, "-c", "import sys; sys.exit(7)"]
    done, _ = _server_job(tmp_path, dead, "open('TRAINED', 'w')")
    assert done.returncode == 1 and "exited with code 7 before it was ready" in done.stderr
    assert not (Path(__file__).resolve().parent.parent / "TRAINED").exists()


def test_slurm_launch_writes_an_sbatch_script_for_every_node(data_file, tmp_path):
    import shlex

    config = GrpoJobConfig(data_files=[data_file], launcher="slurm", nodes=2, gpus=4, deepspeed_stage=0,
                           slurm_partition="gpu", slurm_time="12:00:00")
    command = build_command(config, run_id="r7")
    assert command[:3] == [sys.executable, "-m", "trainers.slurm"]
    script = Path(command[3])
    text = script.read_text()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gres=gpu:4",
                 "#SBATCH --partition=gpu", "#SBATCH --time=12:00:00"):
        assert line in text.splitlines()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0  # valid shell
    (srun,) = [line for line in text.splitlines() if line.startswith("srun ")]
    node = shlex.split(shlex.split(srun)[-1])  # what bash -c runs on each node
    assert node[node.index("--num_processes") + 1] == "8" and node[node.index("--num_machines") + 1] == "2"
    assert "$SLURM_NODEID" in node and "$HEAD_NODE" in node  # filled in on each node
    saved = config_from_command_line("grpo", None, node[node.index("--run-id") + 2:])
    assert saved.nodes == 2 and saved.world_size == 8
    with pytest.raises(ConfigError, match="nodes=2 needs launcher=slurm"):
        GrpoJobConfig(data_files=[data_file], nodes=2, gpus=1)
    with pytest.raises(ConfigError, match="Slurm gives each node its GPUs"):
        GrpoJobConfig(data_files=[data_file], launcher="slurm", gpus=1, gpu_ids="0")
    with pytest.raises(ConfigError, match="not available with launcher=slurm yet"):
        GrpoJobConfig(data_files=[data_file], launcher="slurm", gpus=2, use_vllm=True, vllm_mode="server")
