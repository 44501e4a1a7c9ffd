"""Run a built Space folder the way a Hugging Face Space runs it, and ask it one demo coding question.

Used by tests/test_space.py (the Space simulation) and bench/bench_space.py
(cold start to first answer). A Space runs the app as a non-root user, with
packages from pip only (no bubblewrap on PATH) and Docker's default seccomp
profile, which refuses new namespaces: `launch` reproduces all three -- it
drops to `nobody` when started as root, keeps PATH to the interpreter's own
folder, and installs a seccomp filter that makes unshare/setns/clone with
namespace flags fail with EPERM before it execs `python app.py`.
"""

import os
import pwd
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLONE_NAMESPACE_FLAGS = 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x00020000

# Runs in the launched interpreter: refuse namespaces like Docker's default profile, drop root, exec the app.
LAUNCHER = r'''
import os, sys
sys.path.insert(0, sys.argv[1])
from tools import _sandbox_confine as confine

arch = confine.machine_arch()
column, audit = confine._ARCHES[arch]
number = lambda name: confine.SYSCALLS[name][column]
asm = confine._Assembler()
asm.load(4)
asm.jump(confine._BPF_JEQ, audit, None, "allow")
asm.load(0)
for name in ("unshare", "setns", "mount"):
    asm.jump(confine._BPF_JEQ, number(name), "eperm")
asm.jump(confine._BPF_JEQ, number("clone3"), "enosys")
asm.jump(confine._BPF_JEQ, number("clone"), None, "allow")
asm.load(confine._arg_low(0))  # clone: refused when it asks for a new namespace
asm.jump(confine._BPF_JSET, int(sys.argv[2]), "eperm", "allow")
asm.label("allow")
asm.ret(confine._RET_ALLOW)
asm.label("eperm")
asm.ret(confine._RET_ERRNO | 1)
asm.label("enosys")
asm.ret(confine._RET_ERRNO | 38)
import ctypes, struct
program = asm.assemble()
buffer = ctypes.create_string_buffer(program)
fprog = confine._SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
confine.prctl(confine.PR_SET_NO_NEW_PRIVS, 1)
if confine._libc.syscall({"x86_64": 317, "aarch64": 277}[arch], 1, 1, ctypes.byref(fprog)) != 0:
    raise OSError(ctypes.get_errno(), "seccomp")
uid = int(sys.argv[3])
if uid >= 0 and os.geteuid() == 0:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
os.execv(sys.executable, [sys.executable, "app.py"])
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def world_runnable(python: str) -> bool:
    """Whether any user may run this interpreter (its real file and every folder above it)."""
    path = Path(os.path.realpath(python))
    return path.is_file() and all(os.stat(p).st_mode & 0o001 for p in (path, *path.parents))


def reachable_python() -> str | None:
    """A Python 3.11 every user may run (a Space's image has one; pyenv under /root is not), or None."""
    candidates = [getattr(sys, "_base_executable", sys.executable), "/usr/local/bin/python3.11", "/usr/bin/python3.11"]
    for candidate in candidates:
        path = Path(os.path.realpath(candidate))
        if world_runnable(str(path)):
            version = subprocess.run([str(path), "-c", "import sys; print(sys.version_info[:2] == (3, 11))"],
                                     capture_output=True, text=True)
            if version.stdout.strip() == "True":
                return str(path)
    return None


def space_user() -> int | None:
    """A non-root uid to run as: this one when not root, else the system's `nobody` (nothing is created)."""
    if os.geteuid() != 0:
        return os.geteuid()
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return None


def launch(space: Path, python: str, home: Path, log: Path, uid: int | None) -> tuple[subprocess.Popen, str]:
    """Start the Space's app as a Space would; returns the process and its URL."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    if uid is not None and os.geteuid() == 0:
        os.chown(home, uid, uid)
    env = {"PATH": str(Path(python).parent), "HOME": str(home), "WORKBENCH_HOME": str(home),
           "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", "LANG": "C.UTF-8"}
    with log.open("wb") as handle:
        process = subprocess.Popen([python, "-c", LAUNCHER, str(space), str(CLONE_NAMESPACE_FLAGS),
                                    str(uid if uid is not None else -1)], cwd=space, env=env, stdout=handle,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return process, f"http://127.0.0.1:{port}/"


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 180.0) -> float:
    """Seconds until the app answers HTTP (raises if it dies or never does)."""
    import urllib.request

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"the Space's app exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return time.monotonic() - started
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"the Space did not answer within {timeout:.0f} s")


def ask_demo_coding_item(url: str, demo_name: str, question: str) -> tuple[str, str]:
    """Run a demo item in the Playground through the API, as a visitor; returns (status, transcript HTML)."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/run_playground"]
    values = {"Demo image": demo_name, "Question": question, "Max new tokens": 256, "Max turns": 4}
    args = [values.get(p["label"], p["parameter_default"]) for p in info["parameters"]]
    args[-1] = secrets.token_urlsafe(32)  # the visitor token a browser keeps; an API client brings its own
    status, transcript, _, _ = client.predict(*args, api_name="/run_playground")
    return status, transcript


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, 9)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


if __name__ == "__main__":
    sys.exit("import this module; see bench/bench_space.py")
