"""The warm sandbox worker: numpy/OpenCV/Pillow imported once, one confined forked process per job.

Started by `tools.code_sandbox` as `python -I -B _sandbox_worker.py CONFIG`
(inside bubblewrap, or directly in the Landlock fallback) with a clean
environment. It confines itself first (non-root uid or no capabilities,
non-dumpable, Landlock limited to library folders plus its jobs folder,
seccomp without sockets/exec/ptrace), then serves framed requests on stdin
and answers on stdout. Per job it forks a child that calls setsid, limits
itself (rlimits, a Landlock domain holding only its own work folder, a
seccomp filter that also forbids new processes and signals to others) and
runs the model's code (`tools/_sandbox_job.py`). The worker enforces the
wall clock through a pidfd and the number of files in the job's folder by
counting them every FILE_CHECK_S, kills the job's process group afterwards,
believes the job's report only as a validated, size-bounded shape, collects
output images with O_NOFOLLOW, st_nlink == 1, size/count/pixel caps and a
Pillow re-encode, and hands the job's folder to a janitor process that
deletes it, so a job that left many files does not hold up the next one.
As root inside bubblewrap it mounts its own jobs tmpfs with an inode cap.

Imports only the standard library and its sibling `_sandbox_*` modules at
top level; the image libraries are imported during start-up.
"""

import errno
import gc
import json
import os
import selectors
import shutil
import signal
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _sandbox_code as code_prep
import _sandbox_confine as confine
import _sandbox_job as job_side
import _sandbox_outputs as outputs
import _sandbox_wire as wire

RESULT_FD, MAX_RESULT_BYTES = job_side.RESULT_FD, job_side.MAX_RESULT_BYTES
OUTPUT_NAME = "output.jpg"
FILE_CHECK_S = 0.02  # how often a running job's file count is checked
DEFAULT_MAX_FILES = 1000
MAX_ANSWER_ERROR_CHARS = 3000  # the host refuses longer errors as malformed
SPACE_WAIT_S = 1.0  # how long a new job waits for the janitor when the jobs folder is full
# The job may create, rewrite and delete plain files in its folder; no dirs, links, devices.
JOB_RIGHTS = (confine.READ_ONLY | confine.FS_WRITE_FILE | confine.FS_REMOVE_FILE | confine.FS_MAKE_REG
              | confine.FS_TRUNCATE)
PRELOAD = ("numpy", "cv2", "PIL.Image", "PIL.ImageEnhance", "PIL.ImageFilter", "PIL.ImageOps",
           "PIL.ImageDraw", "math", "json", "re", "random", "collections", "itertools", "functools")


class Job:
    """A forked job: its process, the pipe its report arrives on, its folder and limits."""

    def __init__(self, job_id, pid, pidfd, report_fd, job_dir, work, input_name, limits, code_lines):
        self.id, self.pid, self.pidfd, self.report_fd = job_id, pid, pidfd, report_fd
        self.dir, self.work, self.input_name, self.limits = job_dir, work, input_name, limits
        self.code_lines = code_lines
        self.max_files = int(limits.get("max_files", DEFAULT_MAX_FILES))
        self.report = bytearray()
        self.started = time.monotonic()
        self.deadline = self.started + float(limits["wall_time_s"])
        self.wall_killed = False
        self.files_exceeded = False
        self.answered = False

    @property
    def running(self) -> bool:
        """Still to be watched: not answered and not already stopped for a limit."""
        return not (self.wall_killed or self.files_exceeded or self.answered)


class Worker:
    def __init__(self, config: dict, responses: int):
        self.config, self.responses = config, responses
        self.confined = config["mode"] != "unsafe-none"
        self.jobs: dict[int, Job] = {}
        self.statm = os.open("/proc/self/statm", os.O_RDONLY)
        self.landlock_abi = 0
        self.janitor: tuple[int, int] | None = None  # (pid, pipe) of the process deleting job folders

    # -- start-up -------------------------------------------------------------------------
    def setup(self) -> dict:
        self.jobs_root = self.config["jobs_root"]
        self.jobs_tmpfs = None
        if self.config.get("jobs_tmpfs") and os.geteuid() == 0:  # bwrap as root kept CAP_SYS_ADMIN for this
            try:
                confine.mount_tmpfs(self.jobs_root, self.config["jobs_tmpfs"])
                self.jobs_tmpfs = self.config["jobs_tmpfs"]
            except OSError:  # bwrap's own size-capped tmpfs stays; max_files still bounds each job
                pass
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
        details["jobs_tmpfs"] = self.jobs_tmpfs  # None: no inode cap beyond max_files per job
        self.janitor = _start_janitor(self.jobs_root)
        return details

    # -- main loop ------------------------------------------------------------------------
    def serve(self, requests: int) -> None:
        """Answer requests until the host closes the pipe; a job ends at its report or its exit."""
        self.selector = selectors.DefaultSelector()
        self.selector.register(requests, selectors.EVENT_READ, None)
        while True:
            running = [job.deadline for job in self.jobs.values() if job.running]
            timeout = min(FILE_CHECK_S, max(0.0, min(running) - time.monotonic())) if running else None
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
                if job.running and now >= job.deadline:
                    job.wall_killed = True
                    _kill_group(job.pid)
                elif job.running and _more_files_than(job.work, job.max_files + 1):  # + the input image
                    job.files_exceeded = True
                    _kill_group(job.pid)

    def on_report(self, job: Job) -> None:
        if job.report_fd is None:  # already drained by on_exit in this round
            return
        chunk = os.read(job.report_fd, 65536)
        if chunk:
            job.report += chunk[:MAX_RESULT_BYTES - len(job.report)]
            return
        self._close_report(job)
        report = parse_report(job.report, job.code_lines)
        if report is not None and not job.answered and not job.files_exceeded:
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
            self.answer(job, parse_report(job.report, job.code_lines), status, usage.ru_utime + usage.ru_stime)
        self.remove_folder(job.dir)

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
            self.remove_folder(job.dir)
        if self.janitor is not None:
            os.close(self.janitor[1])  # EOF: it finishes what it was given and exits
            os.waitpid(self.janitor[0], 0)

    def remove_folder(self, path: str) -> None:
        """Have the janitor delete a finished job's folder; delete it here only if the janitor is gone."""
        if self.janitor is not None:
            try:
                os.write(self.janitor[1], os.path.basename(path).encode() + b"\n")
                return
            except OSError:  # gone (EPIPE) or far behind (EAGAIN): do it here
                pass
        shutil.rmtree(path, ignore_errors=True)

    def send(self, message: dict, blob: bytes = b"") -> None:
        wire.write_frame(self.responses, message, blob)

    # -- one job --------------------------------------------------------------------------
    def start_safely(self, request: dict, image: bytes) -> Job | None:
        folder = os.path.join(self.jobs_root, f"job-{int(request.get('id', -1))}")
        patience = time.monotonic() + SPACE_WAIT_S
        while True:
            try:
                return self.start(request, image)
            except OSError as exc:
                shutil.rmtree(folder, ignore_errors=True)
                # A job that filled the jobs tmpfs: the janitor is freeing it; wait a little rather than fail.
                if exc.errno == errno.ENOSPC and self.janitor is not None and time.monotonic() < patience:
                    time.sleep(0.02)
                    continue
                error = exc
            except Exception as exc:
                shutil.rmtree(folder, ignore_errors=True)
                error = exc
            self.send(_failure(int(request.get("id", -1)), f"the sandbox could not start the job: {error}"))
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
        return Job(job_id, pid, os.pidfd_open(pid), report_read, job_dir, work, input_name, limits,
                   code.count("\n") + 1)

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
            status = job_side.execute(code, namespace)
        except BaseException as exc:  # confinement failed: never run the code
            job_side.write_report({"ok": False, "error": f"sandbox setup failed: {type(exc).__name__}: {exc}",
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
        elif job.files_exceeded:
            message["error"] = (f"stopped: the code created more than {job.max_files} files in its folder "
                                "(the max_files limit)")
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
            text = "; ".join(([message["error"]] if message["error"] else []) + problems)
            message["error"] = text if len(text) <= MAX_ANSWER_ERROR_CHARS else \
                text[:MAX_ANSWER_ERROR_CHARS - 20] + " [... more problems]"
            message["ok"] = False
        message["outputs"] = [{"name": name, "format": fmt, "width": w, "height": h, "size": len(data)}
                              for name, fmt, w, h, data in images]
        return message, b"".join(data for *_, data in images)


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


def parse_report(data: bytes, code_lines: int) -> dict | None:
    """The job's fd-3 report as a bounded, validated shape (the job may have written anything there).

    >>> parse_report(b'{"ok": true, "error": "x", "error_line": 10, "memory_error": 1, "extra": 2}', 3)
    {'ok': True, 'error': 'x', 'error_line': None, 'memory_error': False, 'setup_failed': False}
    >>> parse_report(b'[' * 100000, 3) is None
    True
    """
    try:
        report = json.loads(bytes(data)) if data else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(report, dict):
        return None
    error, line = report.get("error"), report.get("error_line")
    return {"ok": report.get("ok") is True,
            "error": error[:job_side.MAX_ERROR_CHARS] if isinstance(error, str) else None,
            "error_line": line if type(line) is int and 1 <= line <= code_lines else None,
            "memory_error": report.get("memory_error") is True,
            "setup_failed": report.get("setup_failed") is True}


def _more_files_than(folder: str, limit: int) -> bool:
    """Whether `folder` holds more than `limit` entries; stops counting there, so the check stays cheap."""
    try:
        with os.scandir(folder) as entries:
            for count, _ in enumerate(entries, 1):
                if count > limit:
                    return True
    except OSError:
        pass
    return False


def _start_janitor(jobs_root: str) -> tuple[int, int]:
    """Fork the process that deletes finished job folders named on its pipe, one line each, at low priority.

    Deleting hundreds of thousands of files takes seconds; done here it would hold up the next job.
    """
    names, feed = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            confine.die_with_parent()
            os.closerange(3, names)  # never hold the host's pipes: the host must see EOF when the worker dies
            os.closerange(names + 1, 1 << 16)
            os.nice(10)
            with os.fdopen(names, "rb") as lines:
                for line in lines:
                    name = os.path.basename(line.decode(errors="replace").strip())
                    if name:
                        shutil.rmtree(os.path.join(jobs_root, name), ignore_errors=True)
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(names)
    os.set_blocking(feed, False)
    return pid, feed


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
