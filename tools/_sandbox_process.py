"""The host side of one sandbox worker process: start it, send it jobs, read its answers, stop it.

Owns `WorkerProcess` (the Popen, its framed request/answer pipes, a reader
thread that hands each answer to the call waiting for it, the worker's
start-up handshake and log) and `kill_tree`. `tools.code_sandbox.CodeSandbox`
decides which worker to start and when to restart one.
"""

import fcntl
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading

from tools import _sandbox_launch as launch
from tools import _sandbox_wire as wire
from tools._sandbox_launch import SandboxUnavailable

STARTUP_TIMEOUT_S = 60.0
PIPE_BUFFER_BYTES = 1024 * 1024


class WorkerGone(RuntimeError):
    pass


class Pending:
    def __init__(self):
        self.event = threading.Event()
        self.frame: tuple[dict, bytes] | None = None


class WorkerProcess:
    """One running worker: its pipes, a reader thread and the calls waiting for answers."""

    def __init__(self, plan: launch.LaunchPlan):
        self.host_jobs_root = plan.host_jobs_root
        self.log = tempfile.TemporaryFile()  # noqa: SIM115  (the worker's stderr, read and closed by stop())
        try:
            self.proc = subprocess.Popen(plan.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                         env=plan.env, cwd="/", close_fds=True, start_new_session=True, bufsize=0)
        except OSError as exc:  # e.g. the interpreter cannot be executed
            self.log.close()
            if plan.host_jobs_root:
                shutil.rmtree(plan.host_jobs_root, ignore_errors=True)
            raise SandboxUnavailable(f"{plan.mode} worker could not be started: {exc}") from None
        self.requests, self.responses = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        for fd in (self.requests, self.responses):
            try:  # a typical image fits in one pipe buffer: fewer context switches per call
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BUFFER_BYTES)
            except OSError:
                pass
        self.pending: dict[int, Pending] = {}
        self.pending_lock = threading.Lock()  # never held during pipe I/O
        self.write_lock = threading.Lock()
        self.alive = True
        # poll, not select: select() fails on descriptors above 1023, which a long-lived process reaches
        waiter = select.poll()
        waiter.register(self.responses, select.POLLIN)
        ready = waiter.poll(STARTUP_TIMEOUT_S * 1000)
        frame = wire.read_frame(self.responses) if ready else None
        if frame is None or frame[0].get("op") != "ready":
            reason = frame[0].get("error") if frame else "no answer"
            try:
                self.proc.wait(timeout=1.0)  # e.g. bwrap refused to start: let it finish writing why
            except subprocess.TimeoutExpired:
                pass
            log = self.log_tail()  # read before stop() closes the log
            self.stop()
            raise SandboxUnavailable(f"{plan.mode} worker did not start: {reason}. {log}".strip())
        self.details = frame[0]["details"]
        self.reader = threading.Thread(target=self._read_answers, name="code-sandbox-reader", daemon=True)
        self.reader.start()

    def log_tail(self, size: int = 800) -> str:
        try:
            self.log.seek(0)
            return self.log.read().decode(errors="replace")[-size:].strip()
        except (OSError, ValueError):
            return ""

    def submit(self, message: dict, blob: bytes) -> Pending:
        pending = Pending()
        with self.pending_lock:
            if not self.alive:
                raise WorkerGone()
            self.pending[message["id"]] = pending
        try:
            with self.write_lock:
                wire.write_frame(self.requests, message, blob)
        except OSError:
            with self.pending_lock:
                self.pending.pop(message["id"], None)
                self.alive = False
            raise WorkerGone() from None
        return pending

    def _read_answers(self) -> None:
        try:
            while (frame := wire.read_frame(self.responses)) is not None:
                with self.pending_lock:
                    pending = self.pending.pop(frame[0].get("id"), None)
                if pending is not None:
                    pending.frame = frame
                    pending.event.set()
        except (OSError, ValueError):
            pass
        with self.pending_lock:
            self.alive = False
            waiting, self.pending = list(self.pending.values()), {}
        for pending in waiting:
            pending.event.set()  # frame None: the worker went away

    def stop(self, grace_s: float = 3.0) -> None:
        self.alive = False
        try:
            self.proc.stdin.close()  # EOF: the worker kills its jobs and exits
        except OSError:
            pass
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            kill_tree(self.proc.pid)  # bwrap's children live in their own session and PID namespace
            self.proc.wait()
        if getattr(self, "reader", None) is not None:
            self.reader.join(timeout=2.0)  # it sees EOF now; never close a fd another thread reads
        self.proc.stdout.close()
        self.log.close()
        if self.host_jobs_root:
            shutil.rmtree(self.host_jobs_root, ignore_errors=True)


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (found through /proc/<pid>/task/*/children)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    queue.extend(int(child) for child in children.read().split())
        except OSError:
            continue
    for victim in found:
        try:
            os.kill(victim, signal.SIGKILL)
        except OSError:
            pass
