"""The sandboxed Python image tool: runs model-written code on one image, isolated.

Owns the public API (`SandboxLimits`, `CodeResult`, `CodeSandbox`, `run_code`,
`denormalize_box`) and the CLI `python -m tools.code_sandbox`. A warm worker
(numpy, OpenCV and Pillow imported once; `tools/_sandbox_worker.py`) forks a
fresh confined process per call; the host sends it the input image and gets
back re-encoded output images, which it writes into the caller's job folder.
The protocol's placeholders and 0..1000 crop boxes are handled as
`tools/_sandbox_code.py` describes (INPUT_WIDTH / INPUT_HEIGHT /
denormalize_box in the code's namespace; `crop_box=` for the paper's rule).

The job folder is flat: the code may create, rewrite and delete files there,
not folders, links or devices. Output images are the image files it leaves
there (the protocol's output first), at most `max_output_images`.

Isolation modes (`isolation_in_use` says which one is enforcing):
- "bwrap": the worker runs in bubblewrap namespaces (no network, own PID/IPC/
  UTS, a mount tree holding only the interpreter, system libraries and a
  size-capped tmpfs for jobs); inside, the worker and each job add Landlock,
  seccomp and rlimits as below. Jobs run as uid 65534 when the host is root.
- "landlock" (fallback where namespaces are refused, e.g. a Hugging Face
  Space): the same Landlock + seccomp + rlimits, without namespaces.
- "unsafe-none": explicit opt-in only; a separate process with rlimits and a
  clean environment and nothing else. "auto" tries bwrap, then landlock, and
  otherwise refuses (SandboxUnavailable). Code never runs in-process.

Protects against: reading files outside the job folder and the interpreter's
own libraries (e.g. /root, the project, sessions, /proc/*/environ); writing
outside the job folder; network access (empty net namespace, no socket()
syscall, Landlock TCP rules); environment secrets (the worker starts from a
clean environment and the host calls PR_SET_DUMPABLE 0); new processes and
fork bombs, execve, ptrace, signals to the host or worker; raising rlimits;
runaway wall time, CPU time, memory (address space; memfd and System V
shared memory, which it does not count, are refused), file size, open files,
number of files in the job folder (`max_files`, counted every 20 ms; as root
under bubblewrap the jobs tmpfs also has an inode cap), stdout/stderr (read
capped from files), number, bytes and pixel size of output images; changes
to scheduling, priority, CPU affinity or I/O priority (which would reach the
shared worker and every later job); a forged job report (believed only as a
validated, size-bounded shape; the host checks the worker's answer too); a
job's leftover files delaying the next job (a janitor process deletes job
folders); symlink and hard-link tricks (not creatable under Landlock,
refused at collection through O_NOFOLLOW and st_nlink == 1; outputs are
decoded under a pixel cap and re-encoded in the confined worker).

Does not protect against: kernel exploits or CPU side channels (the kernel is
shared); total disk use in the landlock fallback (each file is capped and
their number bounded by `max_files`, so about max_files x max_file_mb per
job; bwrap caps the whole jobs tmpfs); threads inside a job (allowed, bounded
by the memory limit);
reading world-readable files inside the library folders (/usr, the Python
prefix), which is by design; concurrent jobs beyond `max_concurrent_jobs`
queueing behind each other. Without Landlock ABI 6 signals are blocked by
seccomp alone; without bwrap and as root with an interpreter under a 0700
folder (e.g. /root/.pyenv), jobs stay uid 0 but without any capabilities.
"""

import argparse
import atexit
import itertools
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from tools import _sandbox_confine as confine
from tools import _sandbox_launch as launch
from tools._sandbox_code import denormalize_box, extract_source
from tools._sandbox_launch import SandboxUnavailable
from tools._sandbox_process import WorkerGone, WorkerProcess

__all__ = ["CodeResult", "CodeSandbox", "SandboxLimits", "SandboxUnavailable", "denormalize_box", "extract_source",
           "run_code", "main"]
ISOLATION_MODES = ("auto", "bwrap", "landlock", "unsafe-none")
MAX_INPUT_BYTES = 64 * 1024 * 1024
ANSWER_MARGIN_S = 30.0  # beyond the wall limit: collection, re-encoding, queueing in the worker
log = logging.getLogger(__name__)


@dataclass
class SandboxLimits:
    wall_time_s: float = field(default=10, metadata={"help": "wall-clock seconds before the job is killed"})
    cpu_time_s: float = field(default=10, metadata={"help": "CPU seconds (RLIMIT_CPU) before the job is killed"})
    memory_mb: int = field(default=1024, metadata={
        "help": "MiB of address space the code may allocate beyond the preloaded libraries (RLIMIT_AS)"})
    max_file_mb: int = field(default=20, metadata={"help": "largest file the code may write, in MiB (RLIMIT_FSIZE)"})
    max_open_files: int = field(default=64, metadata={"help": "open file descriptors (RLIMIT_NOFILE)"})
    max_output_chars: int = field(default=20000, metadata={"help": "characters of stdout and of stderr kept"})
    max_output_images: int = field(default=4, metadata={"help": "output images kept per call"})
    max_output_pixels: int = field(default=4096 * 4096, metadata={"help": "largest output image, in pixels"})
    max_files: int = field(default=1000, metadata={
        "help": "files the code may create in its folder; it is stopped beyond (checked every 20 ms)"})


@dataclass
class CodeResult:
    ok: bool
    stdout: str
    stderr: str
    error: str | None
    error_line: int | None  # line number in the model's code
    timed_out: bool
    memory_exceeded: bool
    output_images: list[str]  # absolute paths, re-encoded, inside the job folder
    duration_s: float

    def to_dict(self) -> dict:
        return asdict(self)


def _failed(error: str, started: float) -> CodeResult:
    return CodeResult(ok=False, stdout="", stderr="", error=error, error_line=None, timed_out=False,
                      memory_exceeded=False, output_images=[], duration_s=time.monotonic() - started)


class CodeSandbox:
    """Runs model code on an image in an isolated, warm worker; thread-safe; a context manager."""

    def __init__(self, limits: SandboxLimits | None = None, isolation: str = "auto", *,
                 max_concurrent_jobs: int | None = None, scratch_mb: int = 512):
        if isolation not in ISOLATION_MODES:
            raise ValueError(f"isolation must be one of {ISOLATION_MODES}, got {isolation!r}")
        self.limits = limits or SandboxLimits()
        self.isolation = isolation
        self.scratch_mb = scratch_mb
        self._slots = threading.BoundedSemaphore(max_concurrent_jobs or max(2, os.cpu_count() or 2))
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._closed = False
        if sys.platform != "linux":
            raise SandboxUnavailable("the code sandbox needs Linux (namespaces, Landlock, seccomp)")
        confine.set_dumpable(False)  # jobs share our uid in the fallback: hide /proc/<us>/environ, no ptrace
        self.isolation_in_use = ""
        self.isolation_details: dict = {}
        self._worker = self._start_worker()
        # A sandbox dropped without close() still stops its worker.
        self._finalizer = weakref.finalize(self, _stop_worker_of, self.__dict__)

    def _start_worker(self) -> WorkerProcess:
        modes = ["bwrap", "landlock"] if self.isolation == "auto" else [self.isolation]
        if self.isolation_in_use:
            modes = [self.isolation_in_use]  # a restart keeps what worked
        reasons = []
        for mode in modes:
            try:
                worker = WorkerProcess(launch.plan(mode, self.scratch_mb * 1024 * 1024))
            except SandboxUnavailable as exc:
                reasons.append(f"{mode}: {exc}")
                continue
            if reasons and not self.isolation_in_use:
                _note_fallback(mode, reasons)
            self.isolation_in_use, self.isolation_details = mode, worker.details
            return worker
        raise SandboxUnavailable(f"no sandbox isolation works here ({'; '.join(reasons)}). {_advice(reasons)}")

    def _current_worker(self) -> WorkerProcess:
        with self._lock:
            if self._closed:
                raise RuntimeError("this CodeSandbox is closed")
            if not self._worker.alive:
                self._worker.stop(grace_s=0.5)
                self._worker = self._start_worker()
            return self._worker

    def _restart(self, worker: WorkerProcess) -> None:
        with self._lock:
            if self._worker is worker:
                worker.alive = False
        worker.stop(grace_s=0.5)

    def run(self, code: str, input_image: str | Path, job_dir: str | Path | None = None, *,
            crop_box=None, limits: SandboxLimits | None = None) -> CodeResult:
        """Run `code` (raw `<code>` argument or plain source) on `input_image`.

        Outputs land in `job_dir` (when None, a new temporary folder made only
        if the code wrote images; the caller owns it). `crop_box`
        is the question's 0..1000 box, for the paper's crop-slice rule.
        Raises FileNotFoundError / ValueError for a missing or oversized input.
        """
        started = time.monotonic()
        limits = limits or self.limits
        if crop_box is not None and len(crop_box) != 4:
            raise ValueError(f"crop_box needs [x_min, y_min, x_max, y_max], got {crop_box!r}")
        image = _read_input(Path(input_image))
        if job_dir is not None:
            Path(job_dir).mkdir(parents=True, exist_ok=True)
        message = {"op": "run", "id": next(self._ids), "code": code, "limits": asdict(limits),
                   "input_suffix": Path(input_image).suffix.lower(),
                   "crop_box": [float(v) for v in crop_box] if crop_box is not None else None}
        with self._slots:
            answer = self._call(message, image, limits.wall_time_s + ANSWER_MARGIN_S)
        if isinstance(answer, str):
            return _failed(answer, started)
        header, blob = answer
        problem = answer_problem(header, blob, limits)
        if problem:  # the worker is confined too: believe only a bounded, well-formed answer
            self._restart(self._worker)
            return _failed(f"the sandbox worker sent a malformed answer ({problem}); it was restarted", started)
        outputs = []
        if header.get("outputs"):  # the default folder is made only when there is something to keep
            folder = Path(job_dir) if job_dir is not None else Path(tempfile.mkdtemp(prefix="code-job-"))
            outputs = _write_outputs(folder.resolve(), header["outputs"], blob)
        return CodeResult(ok=bool(header["ok"]), stdout=header["stdout"], stderr=header["stderr"],
                          error=header["error"], error_line=header["error_line"], timed_out=header["timed_out"],
                          memory_exceeded=header["memory_exceeded"], output_images=outputs,
                          duration_s=time.monotonic() - started)

    def _call(self, message: dict, image: bytes, timeout_s: float) -> tuple[dict, bytes] | str:
        for _attempt in range(2):
            worker = self._current_worker()
            try:
                pending = worker.submit(message, image)
            except WorkerGone:
                continue  # died between jobs: start a fresh one and retry once
            if not pending.event.wait(timeout_s):
                self._restart(worker)
                return "the sandbox worker did not answer in time; it was restarted"
            if pending.frame is None:
                return f"the sandbox worker stopped during the job; it will be restarted. {worker.log_tail(300)}"
            return pending.frame
        return "the sandbox worker could not be started"

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._finalizer.detach()
        self._worker.stop()

    def __enter__(self) -> "CodeSandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_fallbacks_noted: set[str] = set()


def _note_fallback(mode: str, reasons: list[str]) -> None:
    """One log line per process when a weaker isolation than bubblewrap carries the code tool."""
    if mode not in _fallbacks_noted:
        _fallbacks_noted.add(mode)
        log.warning("code sandbox: using the %s fallback (Landlock + seccomp, no namespaces) because %s",
                    mode, "; ".join(reasons))


# What a worker's log says when the interpreter itself could not start (not the isolation around it).
INTERPRETER_FAILURES = ("error while loading shared libraries", "execvp", "can't open file",
                        "No such file or directory", "Permission denied", "could not be started")


def _advice(reasons: list[str]) -> str:
    """What to do about the reasons no isolation mode started, in the order most likely to help.

    Every mode runs the app's own interpreter, so when it is the interpreter that fails everywhere, no
    other isolation mode (not even unsafe-none) would help: the advice is about the interpreter then.
    """
    text = " ".join(reasons)
    if "ModuleNotFoundError" in text or "ImportError" in text:
        return ("The worker could not import numpy, OpenCV or Pillow: install requirements.txt into the "
                f"interpreter that runs the app ({sys.executable}).")
    if reasons and all(any(sign in reason for sign in INTERPRETER_FAILURES) for reason in reasons):
        return (f"The sandbox runs the app's own interpreter ({launch.interpreter()}) and it could not start "
                "there: run the app with a Python whose folders every user may read (the system Python, or a "
                "virtualenv outside /root and home folders such as /opt/venv) with requirements.txt installed.")
    steps = []
    if "not installed" in text:
        steps.append("install bubblewrap (apt-get install bubblewrap, or packages.txt on a Space)")
    if "Landlock" in text:
        steps.append("run on a Linux kernel with Landlock enabled (5.13 or newer)")
    return ("To run code, " + " or ".join(steps or ["allow unprivileged user namespaces for bubblewrap"]) +
            ". Everything else works without the code tool.")


MAX_ERROR_CHARS = 4000


def answer_problem(header: dict, blob: bytes, limits: SandboxLimits) -> str | None:
    """What is wrong with a worker's answer (types, sizes, output count), or None when it is well-formed."""
    text_cap = limits.max_output_chars + 200  # + the worker's truncation note
    checks = [("ok", isinstance(header.get("ok"), bool)),
              ("stdout", isinstance(header.get("stdout"), str) and len(header["stdout"]) <= text_cap),
              ("stderr", isinstance(header.get("stderr"), str) and len(header["stderr"]) <= text_cap),
              ("error", header.get("error") is None or (isinstance(header["error"], str)
                                                        and len(header["error"]) <= MAX_ERROR_CHARS)),
              ("error_line", header.get("error_line") is None or type(header["error_line"]) is int),
              ("timed_out", isinstance(header.get("timed_out"), bool)),
              ("memory_exceeded", isinstance(header.get("memory_exceeded"), bool))]
    outputs = header.get("outputs", [])
    checks.append(("outputs", isinstance(outputs, list) and len(outputs) <= limits.max_output_images and all(
        isinstance(o, dict) and isinstance(o.get("name"), str) and type(o.get("size")) is int and o["size"] >= 0
        for o in outputs) and sum(o["size"] for o in outputs) == len(blob)))
    bad = [name for name, good in checks if not good]
    return ", ".join(bad) if bad else None


def _stop_worker_of(state: dict) -> None:
    state["_worker"].stop(grace_s=0.5)


def _read_input(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"input image {path} does not exist or is not a file")
    size = path.stat().st_size
    if size > MAX_INPUT_BYTES:
        raise ValueError(f"input image {path} has {size} bytes, over the {MAX_INPUT_BYTES} byte limit")
    return path.read_bytes()


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(name)).lstrip(".")[:100]
    return cleaned or "output.png"


def _write_outputs(job_dir: Path, outputs: list[dict], blob: bytes) -> list[str]:
    """Write the worker's re-encoded images into job_dir without following or replacing anything."""
    paths, offset = [], 0
    for output in outputs:
        data, offset = blob[offset:offset + output["size"]], offset + output["size"]
        stem, suffix = os.path.splitext(_safe_name(output["name"]))
        for counter in itertools.count():
            target = job_dir / (f"{stem}{suffix}" if counter == 0 else f"{stem}-{counter}{suffix}")
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                break
            except FileExistsError:
                continue
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        paths.append(str(target))
    return paths


_shared: CodeSandbox | None = None
_shared_failure: SandboxUnavailable | None = None
_shared_lock = threading.Lock()


def default_isolation() -> str:
    """The isolation mode an operator chose with CODE_SANDBOX_ISOLATION (default "auto")."""
    return os.environ.get("CODE_SANDBOX_ISOLATION", "").strip() or "auto"


def shared_sandbox() -> CodeSandbox:
    """The process-wide warm sandbox (isolation from `default_isolation`), started on first use.

    Raises SandboxUnavailable, with the reason and the fix, when no isolation
    works here; the answer is remembered, as the machine will not change.
    """
    global _shared, _shared_failure
    with _shared_lock:
        if _shared_failure is not None:
            raise _shared_failure
        if _shared is None:
            try:
                _shared = CodeSandbox(isolation=default_isolation())
            except SandboxUnavailable as exc:
                _shared_failure = exc
                raise
            except ValueError as exc:  # a misspelt CODE_SANDBOX_ISOLATION
                _shared_failure = SandboxUnavailable(f"CODE_SANDBOX_ISOLATION: {exc}")
                raise _shared_failure from None
            atexit.register(_shared.close)
        return _shared


def run_code(code: str, input_image: str | Path, job_dir: str | Path | None = None,
             limits: SandboxLimits | None = None, *, crop_box=None) -> CodeResult:
    """Run code in the process-wide shared sandbox (see `shared_sandbox`)."""
    return shared_sandbox().run(code, input_image, job_dir, crop_box=crop_box, limits=limits)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.code_sandbox",
                                     description="Run model-written Python image code in the sandbox.")
    parser.add_argument("--input", required=True, help="input image (path_to_input_image.jpg in the code)")
    parser.add_argument("--code", required=True, help="file with the code or the raw <code> argument; - for stdin")
    parser.add_argument("--job-dir", help="folder for the output images (default: a temporary folder, removed "
                                          "after the call unless --keep is given)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (and print its images)")
    parser.add_argument("--crop-box", help="the question's 0..1000 box x_min,y_min,x_max,y_max (paper crop rule)")
    parser.add_argument("--isolation", choices=ISOLATION_MODES, default=default_isolation(),
                        help="default: $CODE_SANDBOX_ISOLATION or auto (bwrap, else the Landlock fallback)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    for limit in fields(SandboxLimits):
        parser.add_argument("--" + limit.name.replace("_", "-"), type=type(limit.default), default=limit.default,
                            help=limit.metadata["help"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        code = sys.stdin.read() if args.code == "-" else Path(args.code).read_text()
        crop_box = [float(v) for v in args.crop_box.split(",")] if args.crop_box else None
        if crop_box is not None and len(crop_box) != 4:
            raise ValueError("--crop-box needs four numbers")
        if not Path(args.input).is_file():
            raise FileNotFoundError(f"input image {args.input} does not exist")
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    limits = SandboxLimits(**{f.name: getattr(args, f.name) for f in fields(SandboxLimits)})
    job_dir = args.job_dir or tempfile.mkdtemp(prefix="code-job-")
    try:
        with CodeSandbox(limits, isolation=args.isolation) as sandbox:
            result = sandbox.run(code, args.input, job_dir, crop_box=crop_box)
    except SandboxUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if not (args.job_dir or args.keep):
            shutil.rmtree(job_dir, ignore_errors=True)
    if not (args.job_dir or args.keep) and result.output_images:
        print(f"note: {len(result.output_images)} output image(s) were not kept; pass --job-dir DIR or --keep",
              file=sys.stderr)
        result.output_images = []
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        status = "ok" if result.ok else f"failed: {result.error} (line {result.error_line})"
        print(f"{status} in {result.duration_s:.3f} s [{sandbox.isolation_in_use}]")
        print(result.stdout, end="")
        print(result.stderr, end="", file=sys.stderr)
        for path in result.output_images:
            print(f"output: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
