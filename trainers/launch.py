"""The exact command that runs a training job, for the jobs module to start and the UI to show.

`build_command(config, gpus)` returns the argv (no shell), the job's
settings written out as `--name value` flags -- every one that differs from
its default -- so the command shown is the whole story and runs as it is:
- CPU (gpus=0) and one GPU: `python -m trainers.grpo --run-id R --model demo ...`;
- several GPUs: `python -m accelerate.commands.launch --config_file
  <generated yaml> -m trainers.grpo ...`, the YAML being a DeepSpeed
  ZeRO-2/3 config (or plain multi-GPU DDP for deepspeed_stage=0) with one
  process per GPU and bf16 mixed precision when the config asks for it.
  vLLM generation (colocated with training) is switched on by the config's
  `use_vllm`, inside the same processes;
- several CPU processes (gpus=0, cpu_processes>1): the DDP launch with
  ACCELERATE_USE_CPU=true, so the processes join over gloo;
- vLLM server mode (use_vllm, vllm_mode=server): `python -m trainers.vllm_server
  URL -- <trl vllm-serve on the next vllm_server_gpus GPUs> -- <the trainer
  command>`, which starts the server, trains, and stops the server.
Environment the job needs is part of the argv (`env NAME=value ...`): with
fewer GPUs than the machine shows, CUDA_VISIBLE_DEVICES names the chosen
ones (TRL refuses nn.DataParallel, which one process seeing 8 GPUs gets).
`format_command` quotes it for display; `write_config_file` saves a config
as a JSON file for `--config FILE` use by hand.
"""

import hashlib
import json
import os
import shlex
import socket
import sys
import uuid
from pathlib import Path

from trainers.config import TrainJobConfig
from trainers.trl_names import settings_as_flags
from workbench import settings
from workbench.files import atomic_write

MODULES = {"grpo": "trainers.grpo", "sft": "trainers.sft"}


def _configs_dir() -> Path:
    folder = settings.jobs_dir() / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_config_file(config: TrainJobConfig) -> Path:
    """The config as JSON under jobs/configs, named by its content (same config, same file)."""
    text = json.dumps(config.to_dict(), indent=1, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = _configs_dir() / f"{config.KIND}-{digest}.json"
    if not path.exists():
        atomic_write(path, text.encode("utf-8"))
    return path


def accelerate_yaml(gpus: int, deepspeed_stage: int, mixed_precision: str) -> str:
    """An accelerate config for one machine with `gpus` processes: DeepSpeed ZeRO or plain DDP.

    >>> "zero_stage: 3" in accelerate_yaml(4, 3, "bf16")
    True
    """
    lines = ["compute_environment: LOCAL_MACHINE", "debug: false"]
    if deepspeed_stage:
        lines += ["deepspeed_config:", "  deepspeed_multinode_launcher: standard",
                  "  offload_optimizer_device: none", "  offload_param_device: none",
                  f"  zero3_init_flag: {'true' if deepspeed_stage == 3 else 'false'}",
                  f"  zero3_save_16bit_model: {'true' if deepspeed_stage == 3 else 'false'}",
                  f"  zero_stage: {deepspeed_stage}", "distributed_type: DEEPSPEED"]
    else:
        lines += ["distributed_type: MULTI_GPU", "gpu_ids: all"]
    lines += ["downcast_bf16: 'no'", "machine_rank: 0", "main_training_function: main",
              f"mixed_precision: '{mixed_precision}'", "num_machines: 1", f"num_processes: {gpus}",
              "rdzv_backend: static", "same_network: true", "tpu_env: []", "tpu_use_cluster: false",
              "tpu_use_sudo: false", "use_cpu: false"]
    return "\n".join(lines) + "\n"


def write_accelerate_config(gpus: int, deepspeed_stage: int, mixed_precision: str) -> Path:
    name = f"accelerate-{'zero' + str(deepspeed_stage) if deepspeed_stage else 'ddp'}-{gpus}gpu-{mixed_precision}.yaml"
    path = _configs_dir() / name
    path.write_text(accelerate_yaml(gpus, deepspeed_stage, mixed_precision), encoding="utf-8")
    return path


def _mixed_precision(config: TrainJobConfig) -> str:
    # auto means bf16 on GPUs (the precision check happens in the job, where the GPUs are)
    return {"auto": "bf16", "bf16": "bf16", "fp16": "fp16", "fp32": "no"}[config.precision]


def visible_gpus() -> list[str]:
    """The GPUs this process can see, by the names CUDA_VISIBLE_DEVICES would use for them."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    already = os.environ.get("CUDA_VISIBLE_DEVICES")
    if already is not None:  # a masked machine: the i-th visible GPU is the i-th name in the mask
        names = [part.strip() for part in already.split(",") if part.strip()]
        return names[:count]
    return [str(index) for index in range(count)]


def chosen_gpus(config: TrainJobConfig, visible: list[str]) -> list[str] | None:
    """The GPUs to make visible to the job (None: leave the environment as it is).

    `gpu_ids` index the visible GPUs; without them the first `gpus` are taken.

    >>> chosen_gpus(type("C", (), {"gpus": 1, "gpu_ids": ""})(), ["0", "1", "2", "3"])
    ['0']
    >>> chosen_gpus(type("C", (), {"gpus": 2, "gpu_ids": "3,1"})(), ["4", "5", "6", "7"])
    ['7', '5']
    >>> chosen_gpus(type("C", (), {"gpus": 4, "gpu_ids": ""})(), ["0", "1", "2", "3"]) is None
    True
    """
    if not config.gpus:
        return None
    wanted = [int(part) for part in config.gpu_ids.split(",") if part.strip()]
    if wanted:
        if max(wanted) >= len(visible):
            return None  # preflight refuses it, naming the visible GPUs
        return [visible[index] for index in wanted]
    if len(visible) <= config.gpus:
        return None  # all of them (or too few: preflight says so)
    return visible[:config.gpus]


def vllm_server_gpus(config: TrainJobConfig, visible: list[str]) -> list[str] | None:
    """The GPUs of the job's own vLLM server: the next visible ones after the training GPUs (None: too few).

    >>> config = type("C", (), {"gpus": 2, "gpu_ids": "", "vllm_server_gpus": 2})()
    >>> vllm_server_gpus(config, ["0", "1", "2", "3", "4"])
    ['2', '3']
    """
    training = chosen_gpus(config, visible) or visible[:config.gpus]
    rest = [gpu for gpu in visible if gpu not in training]
    return rest[:config.vllm_server_gpus] if len(rest) >= config.vllm_server_gpus else None


def _uses_vllm_server(config: TrainJobConfig) -> bool:
    return bool(getattr(config, "use_vllm", False)) and getattr(config, "vllm_mode", "") == "server"


def launch_environment(config: TrainJobConfig) -> dict[str, str]:
    """Environment variables the job's processes must start with."""
    if config.gpus == 0:
        return {"ACCELERATE_USE_CPU": "true"} if config.cpu_processes > 1 else {}
    visible = visible_gpus()
    chosen = chosen_gpus(config, visible)
    if chosen is None and _uses_vllm_server(config) and len(visible) > config.gpus:
        chosen = visible[:config.gpus]  # the rest belong to the vLLM server
    return {"CUDA_VISIBLE_DEVICES": ",".join(chosen)} if chosen is not None else {}


def vllm_server_command(config: TrainJobConfig) -> list[str]:
    """`trl vllm-serve` for the job's model on its own GPUs (TRL's command, without its deprecation hop)."""
    from trl.scripts.vllm_serve import ScriptArguments
    from trl.scripts.vllm_serve import build_command as trl_vllm_serve_command

    from trainers.modeling import resolve_model_path

    arguments = ScriptArguments(model=resolve_model_path(config.model), tensor_parallel_size=config.vllm_server_gpus,
                                host="127.0.0.1", port=config.vllm_server_port)
    devices = vllm_server_gpus(config, visible_gpus())
    environment = ["VLLM_SERVER_DEV_MODE=1"]  # as `trl vllm-serve` sets: the weight-transfer endpoints
    if devices is not None:
        environment.insert(0, "CUDA_VISIBLE_DEVICES=" + ",".join(devices))
    return ["env", *environment, *trl_vllm_serve_command(arguments)]


def _free_port() -> int:
    """A free loopback port for the processes' rendezvous (two jobs on one machine must not share 29500)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def build_command(config: TrainJobConfig, gpus: int | None = None, *, run_id: str | None = None,
                  job_id: str | None = None, resume: bool = False) -> list[str]:
    """The argv that runs `config` on `gpus` GPUs (default: config.gpus); writes the accelerate file it names."""
    gpus = config.gpus if gpus is None else gpus
    if gpus < 0:
        raise ValueError(f"gpus={gpus}: use 0 for CPU or the number of GPUs")
    if gpus != config.gpus:  # the job must see the same device count the command was built for
        values = config.to_dict()
        values["gpus"] = gpus
        if gpus:
            values["cpu_processes"] = 1
        if values.get("gpu_ids") and len(values["gpu_ids"].split(",")) != gpus:
            values["gpu_ids"] = ""
        config = type(config).from_dict(values)
    processes = config.world_size
    if processes > 1 and not run_id:
        run_id = uuid.uuid4().hex[:12]  # every process of the launch must write to the same run
    module = MODULES[config.KIND]
    arguments = ["-m", module]
    if run_id:
        arguments += ["--run-id", run_id]
    if job_id:
        arguments += ["--job-id", job_id]
    if resume:
        arguments.append("--resume")
    values = {name: value for name, value in config.to_dict().items() if name != "kind"}
    arguments += settings_as_flags(values, type(config).defaults())
    if config.launcher == "slurm":
        return _slurm_command(config, arguments, run_id or uuid.uuid4().hex[:12])
    environment = launch_environment(config)
    prefix = ["env", *(f"{name}={value}" for name, value in environment.items())] if environment else []
    if processes <= 1:
        command = [*prefix, sys.executable, *arguments]
    else:
        stage = config.deepspeed_stage if gpus else 0  # CPU processes: plain DDP over gloo
        precision = _mixed_precision(config) if gpus else "no"
        launcher = write_accelerate_config(processes, stage, precision)
        command = [*prefix, sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(launcher),
                   "--num_processes", str(processes), "--main_process_port", str(_free_port()), *arguments]
    if not _uses_vllm_server(config):
        return command
    health = f"http://127.0.0.1:{config.vllm_server_port}/health"
    return [sys.executable, "-m", "trainers.vllm_server", health, "--", *vllm_server_command(config), "--", *command]


def _slurm_command(config: TrainJobConfig, arguments: list[str], run_id: str) -> list[str]:
    """`python -m trainers.slurm SCRIPT`, SCRIPT running the job on config.nodes machines (trainers.slurm).

    Slurm gives each node its GPUs (CUDA_VISIBLE_DEVICES from --gres); NODE_RANK and HEAD_NODE are filled in
    on each node by the script.
    """
    from trainers.slurm import sbatch_script

    processes = config.world_size
    environment = {"WORKBENCH_HOME": str(settings.home())}
    if config.gpus == 0 and processes > 1:
        environment["ACCELERATE_USE_CPU"] = "true"
    if processes <= 1:
        node_command = [sys.executable, *arguments]
    else:
        stage = config.deepspeed_stage if config.gpus else 0
        precision = _mixed_precision(config) if config.gpus else "no"
        launcher = write_accelerate_config(processes, stage, precision)
        node_command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(launcher),
                        "--num_processes", str(processes), "--num_machines", str(config.nodes),
                        "--machine_rank", "NODE_RANK", "--main_process_ip", "HEAD_NODE",
                        "--main_process_port", "29500", *arguments]
    script = _configs_dir() / f"slurm-{run_id}.sh"
    text = sbatch_script(config, node_command, job_name=f"visual-arft-{run_id}",
                         log_path=settings.jobs_dir() / f"slurm-{run_id}-%j.log",
                         workdir=Path(__file__).resolve().parent.parent, environment=environment)
    atomic_write(script, text.encode("utf-8"))
    return [sys.executable, "-m", "trainers.slurm", str(script)]


def format_command(command: list[str]) -> str:
    """The command as one shell-quoted line, for display.

    >>> format_command(["python", "-m", "trainers.grpo", "--config", "a b.json"])
    "python -m trainers.grpo --config 'a b.json'"
    """
    return " ".join(shlex.quote(part) for part in command)
