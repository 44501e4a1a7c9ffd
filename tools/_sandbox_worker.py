"""The warm sandbox worker: numpy/OpenCV/Pillow imported once, one confined forked process per job.

Started by `tools.code_sandbox` as `python -I -B _sandbox_worker.py CONFIG`
(inside bubblewrap, or directly in the Landlock fallback) with a clean
environment. It confines itself first (non-root uid or no capabilities,
non-dumpable, Landlock limited to library folders plus its jobs folder,
seccomp without sockets/exec/ptrace), then serves framed requests on stdin
and answers on stdout. Per job it forks a child that calls setsid, limits
itself (rlimits, a Landlock domain holding only its own work folder, a
seccomp filter that also forbids new processes and signals to others) and
runs the model's code. The worker enforces the wall clock through a pidfd,
kills the job's process group afterwards, and collects output images with
O_NOFOLLOW, st_nlink == 1, size/count/pixel caps and a Pillow re-encode.

Imports only the standard library and its sibling `_sandbox_*` modules at
top level; the image libraries are imported during start-up.
"""

import gc
import io
import json
import os
import selectors
import shutil
import signal
import stat
import sys
import time
import traceback
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _sandbox_code as code_prep
import _sandbox_confine as confine
import _sandbox_outputs as outputs
import _sandbox_wire as wire

MODEL_FILENAME = "<model_code>"
RESULT_FD = 3
MAX_RESULT_BYTES = 1 << 20
OUTPUT_NAME = "output.jpg"
# The job may create, rewrite and delete plain files in its folder; no dirs, links, devices.
JOB_RIGHTS = (confine.READ_ONLY | confine.FS_WRITE_FILE | confine.FS_REMOVE_FILE | confine.FS_MAKE_REG
              | confine.FS_TRUNCATE)
PRELOAD = ("numpy", "cv2", "PIL.Image", "PIL.ImageEnhance", "PIL.ImageFilter", "PIL.ImageOps",
           "PIL.ImageDraw", "math", "json", "re", "random", "collections", "itertools", "functools")


class Job:
    """A forked job: its process, the pipe its report arrives on, its folder and limits."""

    def __init__(self, job_id, pid, pidfd, report_fd, job_dir, work, input_name, limits):
        self.id, self.pid, self.pidfd, self.report_fd = job_id, pid, pidfd, report_fd
        self.dir, self.work, self.input_name, self.limits = job_dir, work, input_name, limits
        self.report = bytearray()
        self.started = time.monotonic()
        self.deadline = self.started + float(limits["wall_time_s"])
        self.wall_killed = False
        self.answered = False


class Worker:
    def __init__(self, config: dict, responses: int):
        self.config, self.responses = config, responses
        self.confined = config["mode"] != "unsafe-none"
        self.jobs: dict[int, Job] = {}
        self.statm = os.open("/proc/self/statm", os.O_RDONLY)
        self.landlock_abi = 0

    # -- start-up -------------------------------------------------------------------------
    def setup(self) -> dict:
        self.jobs_root = self.config["jobs_root"]
        if os.geteuid() == 0:
            uid = self.config.get("run_as")
            if uid is not None:
                os.chown(self.jobs_root, uid, uid)
                confine.become_user(uid, uid)
            else:
                confine.drop_capabilities()
        os.chdir(self.jobs_root)
        for name in PRELOAD:
            __import__(name)
        import cv2
        from PIL import Image
        cv2.setNumThreads(1)  # no thread pool to leave half-alive across fork()
        Image.init()
        gc.collect()
        gc.freeze()  # children's collections then skip (and do not copy) the preloaded objects
        confine.set_dumpable(False)
        details = {"mode": self.config["mode"], "uid": os.getuid(), "capabilities": confine.effective_capabilities(),
                   "landlock_abi": 0, "seccomp": False, "threads": len(os.listdir("/proc/self/task")),
                   "python": sys.executable, "prefix": sys.prefix, "sys_path": sys.path[1:],
                   "libraries": {name: sys.modules[name].__file__ for name in ("numpy", "cv2", "PIL")}}
        library = [(path, confine.READ_ONLY) for path in self.config["read_paths"]]
        devices = [("/dev/null", confine.FS_READ_FILE | confine.FS_WRITE_FILE),
                   ("/dev/zero", confine.FS_READ_FILE), ("/dev/urandom", confine.FS_READ_FILE)]
        self.read_rules = confine.open_rule_paths(library + devices)
        if self.confined:
            if not confine.seccomp_available():  # reads /proc, so before Landlock hides it
                raise OSError("seccomp filtering is not available on this machine")
            self.landlock_abi = confine.landlock_abi()
            if self.landlock_abi:
                root_fd = os.open(self.jobs_root, os.O_PATH)
                confine.landlock_restrict(self.read_rules + [(root_fd, confine.READ_WRITE)], self.landlock_abi)
                os.close(root_fd)
            elif self.config["mode"] == "landlock":
                raise OSError("Landlock is not available in this kernel")
            confine.install_seccomp(None)
            details.update(landlock_abi=self.landlock_abi, seccomp=True)
        details["jobs_root"] = self.jobs_root
        return details

    # -- main loop ------------------------------------------------------------------------
    def serve(self, requests: int) -> None:
        """Answer requests until the host closes the pipe; a job ends at its report or its exit."""
        self.selector = selectors.DefaultSelector()
        self.selector.register(requests, selectors.EVENT_READ, None)
        while True:
            running = [job.deadline for job in self.jobs.values() if not (job.wall_killed or job.answered)]
            timeout = max(0.0, min(running) - time.monotonic()) if running else None
            for key, _ in self.selector.select(timeout):
                if key.data is None:
                    frame = wire.read_frame(requests)
                    if frame is None:
                        return self.shutdown()
                    job = self.start_safely(*frame)
                    if job is not None:
                        self.jobs[job.pidfd] = job
                        self.selector.register(job.pidfd, selectors.EVENT_READ, ("exit", job))
                        self.selector.register(job.report_fd, selectors.EVENT_READ, ("report", job))
                elif key.data[0] == "report":
                    self.on_report(key.data[1])
                else:
                    self.on_exit(key.data[1])
            now = time.monotonic()
            for job in self.jobs.values():
                if not job.wall_killed and not job.answered and now >= job.deadline:
                    job.wall_killed = True
                    _kill_group(job.pid)

    def on_report(self, job: Job) -> None:
        if job.report_fd is None:  # already drained by on_exit in this round
            return
        chunk = os.read(job.report_fd, 65536)
        if chunk:
            job.report += chunk[:MAX_RESULT_BYTES - len(job.report)]
            return
        self._close_report(job)
        report = _parse_report(job.report)
        if report is not None and not job.answered:
            # The job has said it is done: stop it now and answer without waiting for its exit
            # (tearing down a forked address space takes a few ms).
            _kill_group(job.pid)
            self.answer(job, report, status=None, cpu_used=0.0)

    def on_exit(self, job: Job) -> None:
        self.selector.unregister(job.pidfd)
        del self.jobs[job.pidfd]
        _kill_group(job.pid)  # the zombie leader keeps the group id reserved until reaped
        _, status, usage = os.wait4(job.pid, 0)
        os.close(job.pidfd)
        if job.report_fd is not None:
            while chunk := os.read(job.report_fd, 65536):
                job.report += chunk[:MAX_RESULT_BYTES - len(job.report)]
            self._close_report(job)
        if not job.answered:
            self.answer(job, _parse_report(job.report), status, usage.ru_utime + usage.ru_stime)
        shutil.rmtree(job.dir, ignore_errors=True)

    def _close_report(self, job: Job) -> None:
        self.selector.unregister(job.report_fd)
        os.close(job.report_fd)
        job.report_fd = None

    def answer(self, job: Job, report: dict | None, status: int | None, cpu_used: float) -> None:
        job.answered = True
        try:
            message, blob = self.build_answer(job, report, status, cpu_used)
        except Exception as exc:  # answer the host whatever happened, keep serving
            message, blob = _failure(job.id, f"the sandbox could not collect the job: {exc}"), b""
        self.send(message, blob)

    def shutdown(self) -> None:
        for job in self.jobs.values():
            _kill_group(job.pid)
            os.waitpid(job.pid, 0)
            shutil.rmtree(job.dir, ignore_errors=True)

    def send(self, message: dict, blob: bytes = b"") -> None:
        wire.write_frame(self.responses, message, blob)

    # -- one job --------------------------------------------------------------------------
    def start_safely(self, request: dict, image: bytes) -> Job | None:
        try:
            return self.start(request, image)
        except Exception as exc:  # e.g. the jobs folder is full: answer, keep serving
            self.send(_failure(int(request.get("id", -1)), f"the sandbox could not start the job: {exc}"))
            shutil.rmtree(os.path.join(self.jobs_root, f"job-{int(request.get('id', -1))}"), ignore_errors=True)
            return None

    def start(self, request: dict, image: bytes) -> Job | None:
        job_id, limits = int(request["id"]), request["limits"]
        job_dir = os.path.join(self.jobs_root, f"job-{job_id}")
        work = os.path.join(job_dir, "work")
        os.mkdir(job_dir, 0o700)
        os.mkdir(work, 0o700)
        suffix = request.get("input_suffix", ".jpg")
        input_name = "input" + (suffix if suffix in outputs.IMAGE_SUFFIXES else ".img")
        input_path, output_path = os.path.join(work, input_name), os.path.join(work, OUTPUT_NAME)
        with open(input_path, "wb") as f:
            f.write(image)
        width, height = _image_size(input_path)
        namespace = {"INPUT_PATH": input_path, "OUTPUT_PATH": output_path,
                     "INPUT_WIDTH": width, "INPUT_HEIGHT": height}
        code = code_prep.substitute_paths(code_prep.extract_source(request["code"]), input_path, output_path)
        if request.get("crop_box") is not None:
            if width is None:
                self.send(_failure(job_id, "the input image is unreadable, so the crop box cannot be applied"))
                shutil.rmtree(job_dir, ignore_errors=True)
                return None
            pixel_box = code_prep.denormalize_box(request["crop_box"], width, height)
            code = code_prep.rewrite_crop_slices(code, pixel_box)
            namespace.update(CROP_BOX=tuple(request["crop_box"]), CROP_BOX_PIXELS=pixel_box)
        streams = [os.open(os.path.join(job_dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                   for name in ("stdout", "stderr")]
        report_read, report_write = os.pipe()
        streams.append(report_write)
        memory = confine.virtual_memory_bytes(self.statm) + int(limits["memory_mb"]) * 1024 * 1024
        pid = os.fork()
        if pid == 0:
            self.run_child(code, namespace, work, streams, limits, memory)
        for fd in streams:
            os.close(fd)
        return Job(job_id, pid, os.pidfd_open(pid), report_read, job_dir, work, input_name, limits)

    def run_child(self, code: str, namespace: dict, work: str, streams: list[int], limits: dict,
                  memory: int) -> None:
        """In the forked child: confine, run the model's code, report, never return."""
        status = 70
        try:
            os.setsid()
            confine.die_with_parent()
            for target, fd in zip((1, 2, RESULT_FD), streams):
                os.dup2(fd, target)
            if self.confined and self.landlock_abi:
                work_fd = os.open(work, os.O_PATH)
                confine.landlock_restrict(self.read_rules + [(work_fd, JOB_RIGHTS)], self.landlock_abi)
            os.closerange(RESULT_FD + 1, 1 << 16)  # host pipes, rule fds, other jobs' pidfds
            os.chdir(work)
            os.environ.update(TMPDIR=work, HOME=work, MPLCONFIGDIR=work)
            confine.set_job_rlimits(address_space=memory, cpu_seconds=float(limits["cpu_time_s"]),
                                    file_bytes=int(limits["max_file_mb"]) * 1024 * 1024,
                                    open_files=int(limits["max_open_files"]))
            if self.confined:
                confine.install_seccomp(os.getpid())
            status = _execute(code, namespace)
        except BaseException as exc:  # confinement failed: never run the code
            _write_report({"ok": False, "error": f"sandbox setup failed: {type(exc).__name__}: {exc}",
                           "error_line": None, "memory_error": False, "setup_failed": True})
        finally:
            os._exit(status)

    def build_answer(self, job: Job, report: dict | None, status: int | None,
                     cpu_used: float) -> tuple[dict, bytes]:
        limits = job.limits
        message = {"op": "result", "id": job.id, "ok": False, "error": None, "error_line": None,
                   "timed_out": False, "memory_exceeded": False,
                   "stdout": outputs.read_capped(os.path.join(job.dir, "stdout"), int(limits["max_output_chars"])),
                   "stderr": outputs.read_capped(os.path.join(job.dir, "stderr"), int(limits["max_output_chars"])),
                   "worker_duration_s": time.monotonic() - job.started}
        if job.wall_killed:
            message.update(timed_out=True, error=f"wall time limit of {limits['wall_time_s']} s exceeded")
        elif status is not None and os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_used >= float(limits["cpu_time_s"])):
                message.update(timed_out=True, error=f"CPU time limit of {limits['cpu_time_s']} s exceeded")
            elif sig == signal.SIGKILL:
                message.update(memory_exceeded=True, error="killed (SIGKILL), most likely out of memory")
            else:
                message.update(error=f"crashed with signal {signal.Signals(sig).name}")
        elif report is not None:
            message.update(ok=bool(report.get("ok")) and not report.get("setup_failed"), error=report.get("error"),
                           error_line=report.get("error_line"), memory_exceeded=bool(report.get("memory_error")))
        elif os.WEXITSTATUS(status) == 0:
            message["ok"] = True  # ended through os._exit(0): nothing to report
        else:
            message["error"] = f"exited with status {os.WEXITSTATUS(status)} before finishing"
        images, problems = outputs.collect(job.work, job.input_name, OUTPUT_NAME, limits)
        if problems:
            message["error"] = "; ".join(([message["error"]] if message["error"] else []) + problems)
            message["ok"] = False
        message["outputs"] = [{"name": name, "format": fmt, "width": w, "height": h, "size": len(data)}
                              for name, fmt, w, h, data in images]
        return message, b"".join(data for *_, data in images)


# --- inside the job process ----------------------------------------------------------------------

def _execute(code: str, namespace: dict) -> int:
    import builtins
    import linecache
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8",
                                  errors="backslashreplace", line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                                  errors="backslashreplace", line_buffering=True)
    sys.argv = [MODEL_FILENAME]
    linecache.cache[MODEL_FILENAME] = (len(code), None, code.splitlines(True), MODEL_FILENAME)
    width, height = namespace["INPUT_WIDTH"], namespace["INPUT_HEIGHT"]

    def denormalize_box(box, width=width, height=height):
        """A 0..1000 [x_min, y_min, x_max, y_max] box as pixels (x0, y0, x1, y1) of the input image."""
        return code_prep.denormalize_box(box, width, height)

    namespace.update(__name__="__main__", __builtins__=builtins, denormalize_box=denormalize_box)
    report = {"ok": True, "error": None, "error_line": None, "memory_error": False}
    try:
        exec(compile(code, MODEL_FILENAME, "exec"), namespace)
        _join_threads()
    except SystemExit as exc:
        if exc.code not in (None, 0):
            report.update(ok=False, error=f"SystemExit: {exc.code}")
    except BaseException as exc:
        report.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:2000], error_line=_model_line(exc),
                      memory_error=_is_memory_error(exc))
        try:
            traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)
        except BaseException:
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    _write_report(report)
    return 0 if report["ok"] else 1  # tells the worker even when the report pipe was closed by the code


def _join_threads() -> None:
    """Wait for the code's non-daemon threads, as a normal interpreter exit would."""
    threading = sys.modules.get("threading")
    if threading is None:
        return
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()


def _write_report(report: dict) -> None:
    """Send the report and close the pipe: the worker then stops and answers at once."""
    try:
        if not stat.S_ISFIFO(os.fstat(RESULT_FD).st_mode):
            return  # the code closed the report pipe (and maybe reused fd 3): do not write into its files
        data = memoryview(json.dumps(report).encode()[:MAX_RESULT_BYTES])
        while data:
            data = data[os.write(RESULT_FD, data):]
        os.close(RESULT_FD)
    except BaseException:
        pass


def _model_line(exc: BaseException) -> int | None:
    if isinstance(exc, SyntaxError) and exc.filename == MODEL_FILENAME:
        return exc.lineno
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == MODEL_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _is_memory_error(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return type(exc).__name__ == "error" and ("insufficient memory" in text or "failed to allocate" in text)


# --- worker-side helpers -----------------------------------------------------------------------

def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _failure(job_id: int, error: str) -> dict:
    return {"op": "result", "id": job_id, "ok": False, "error": error, "error_line": None, "timed_out": False,
            "memory_exceeded": False, "stdout": "", "stderr": "", "outputs": [], "worker_duration_s": 0.0}


def _image_size(path: str) -> tuple[int | None, int | None]:
    """Width and height from the header only (nothing is decoded, so no pixel cap is needed)."""
    from PIL import Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.width, image.height
    except Exception:
        return None, None


def _parse_report(data: bytes) -> dict | None:
    try:
        report = json.loads(bytes(data)) if data else None
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


def main() -> int:
    config = json.loads(sys.argv[1])
    if config.get("sys_path"):  # the host's library folders: a venv's or the user site's packages too
        sys.path[1:] = config["sys_path"]
    requests, responses = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # stray prints from libraries must not corrupt the frame stream
    worker = Worker(config, responses)
    try:
        details = worker.setup()
    except BaseException as exc:
        wire.write_frame(responses, {"op": "fatal", "error": f"{type(exc).__name__}: {exc}"})
        return 1
    wire.write_frame(responses, {"op": "ready", "details": details})
    worker.serve(requests)
    return 0


if __name__ == "__main__":
    sys.exit(main())
