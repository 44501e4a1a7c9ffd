"""How the host starts the sandbox worker: inside bubblewrap, or directly (Landlock fallback).

Owns: checking what the machine supports, the folders the worker and its
jobs may read (the interpreter, its site-packages and the system libraries;
never the project, /root as a whole, /home, /tmp or /proc of the host), the
clean environment (no API keys or tokens ever reach the worker), the uid the
jobs run as, and the bwrap / plain command lines.

The worker runs the host's own interpreter with the host's library import
path, whatever environment the host runs in: the system Python, a venv
(with or without --system-site-packages; found through the venv's own
`bin/python`, which `-I` keeps), a conda-style prefix, or packages in the
user site (which `-I` alone would drop). Only installed-library folders of
that path are passed on: the project, the current folder and PYTHONPATH
entries outside the interpreter's prefixes and site folders are not.
"""

import json
import os
import shutil
import site
import stat
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tools import _sandbox_confine as confine

TOOLS_DIR = Path(__file__).resolve().parent
WORKER_FILES = ("_sandbox_worker.py", "_sandbox_confine.py", "_sandbox_code.py", "_sandbox_wire.py",
                "_sandbox_outputs.py", "_sandbox_job.py")
SANDBOX_DIR = "/opt/code-sandbox"  # where bwrap shows the worker's files
BWRAP_JOBS_ROOT = "/jobs"
NOBODY = 65534
# Files (inodes) the whole jobs tmpfs may hold, beside its size: each costs kernel memory that the tmpfs size
# does not count. Each job is also stopped past its own max_files; this caps all concurrent jobs together.
JOBS_TMPFS_INODES = 20000
SYSTEM_LIBRARY_PATHS = ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/etc/ld.so.cache")
WORKER_ENV = {
    "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/nonexistent",
    "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMEXPR_NUM_THREADS": "1",
    "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8", "OPENCV_LOG_LEVEL": "ERROR",
}


class SandboxUnavailable(RuntimeError):
    """The requested isolation cannot be set up here; the message says why and what to do."""


@dataclass
class LaunchPlan:
    mode: str
    argv: list[str]
    env: dict[str, str]
    config: dict = field(default_factory=dict)
    host_jobs_root: str | None = None  # a host folder the worker uses for jobs; delete after the worker


def interpreter() -> str:
    """The host's interpreter as a path the worker can start: its folder resolved, its name kept.

    Resolving the name itself (a venv's `bin/python` is a link to the base
    interpreter) would leave the venv: Python finds `pyvenv.cfg` next to the
    path it was started as.
    """
    return os.path.join(os.path.realpath(os.path.dirname(sys.executable)), os.path.basename(sys.executable))


def _site_folders() -> list[str]:
    folders = list(site.getsitepackages())
    if site.ENABLE_USER_SITE and site.getusersitepackages():
        folders.append(site.getusersitepackages())
    return folders


def _library_roots() -> list[str]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *_site_folders()}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        roots.add(sysconfig.get_paths()[key])
    return sorted(os.path.realpath(root) for root in roots)


def library_sys_path() -> list[str]:
    """The host's import path, keeping only installed-library folders, in the host's order.

    The project (the folder holding tools/), the current folder and anything
    outside the interpreter's prefixes and site folders are left out, so the
    worker and its jobs cannot read them.
    """
    roots, project = _library_roots(), str(TOOLS_DIR.parent)
    kept: list[str] = []
    for entry in sys.path:
        path = os.path.realpath(entry or os.getcwd())
        if not os.path.isdir(path) or path in kept or _covered(project, [path]):
            continue
        if _covered(path, roots):
            kept.append(path)
    return kept


def _interpreter_shared_libraries() -> set[str]:
    """Folders of the libpython the host has loaded (a relocated prefix may load it from elsewhere)."""
    folders = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split(maxsplit=5)[-1].strip()
                if os.path.basename(path).startswith("libpython"):
                    folders.add(os.path.dirname(os.path.realpath(path)))
    except OSError:
        pass
    return folders


def _interpreter_paths() -> list[str]:
    paths = set(_library_roots()) | set(library_sys_path()) | _interpreter_shared_libraries()
    paths.add(str(Path(os.path.realpath(sys.executable)).parent))
    paths.add(os.path.dirname(interpreter()))
    return sorted(paths)


def _covered(path: str, folders: list[str]) -> bool:
    return any(path == kept or path.startswith(kept.rstrip("/") + "/") for kept in folders)


def read_paths() -> list[str]:
    """Real, existing, non-nested folders (and files) the worker and jobs may read."""
    chosen: list[str] = []
    for path in sorted({os.path.realpath(p) for p in (*SYSTEM_LIBRARY_PATHS, *_interpreter_paths())}, key=len):
        if path == "/" or not os.path.exists(path):
            continue
        if _covered(path, chosen):
            continue
        chosen.append(path)
    return chosen


def _world_reachable(path: str) -> bool:
    """Every ancestor searchable by others and the path itself readable by others."""
    current = Path(path)
    for parent in current.parents:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return False
    mode = os.stat(current).st_mode
    return bool(mode & stat.S_IROTH) and (not stat.S_ISDIR(mode) or bool(mode & stat.S_IXOTH))


def job_uid(mode: str, paths: list[str]) -> int | None:
    """The uid jobs run as when the host is root; None = stay uid 0 without capabilities."""
    if os.geteuid() != 0:
        return None
    if mode == "bwrap":
        return NOBODY  # inside the sandbox's own mount tree every bound folder is reachable
    needed = paths + [str(TOOLS_DIR / name) for name in WORKER_FILES]
    return NOBODY if all(_world_reachable(p) for p in needed) else None


def worker_env() -> dict[str, str]:
    env = dict(WORKER_ENV)
    if os.environ.get("LD_LIBRARY_PATH"):
        env["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]  # some interpreters need it to start
    return env


def bwrap_binary() -> str | None:
    return shutil.which("bwrap")


def _bwrap_mounts(paths: list[str]) -> list[str]:
    args: list[str] = []
    made: set[str] = set()
    for path in paths:
        for parent in reversed(Path(path).parents):
            name = str(parent)
            if name != "/" and name not in made and not any(name == p for p in paths):
                args += ["--perms", "0755", "--dir", name]  # bwrap would copy a 0700 /root otherwise
                made.add(name)
        args += ["--ro-bind", path, path]
    for name in ("/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin"):  # merged-/usr links, e.g. ld.so's path
        if os.path.islink(name) and _covered(os.path.realpath(name), paths):
            args += ["--symlink", os.readlink(name), name]
    return args


def plan(mode: str, scratch_bytes: int) -> LaunchPlan:
    """The command that starts a worker in `mode` (bwrap, landlock or unsafe-none)."""
    if sys.platform != "linux":
        raise SandboxUnavailable("the code sandbox needs Linux")
    paths = read_paths()
    python = interpreter()
    config = {"mode": mode, "read_paths": paths, "run_as": job_uid(mode, paths), "jobs_root": None,
              "sys_path": library_sys_path()}
    env = worker_env()
    if mode == "landlock" and not (confine.landlock_abi() > 0 and confine.seccomp_available()):
        raise SandboxUnavailable("Landlock and seccomp are both needed for the fallback and this kernel "
                                 f"lacks one (Landlock ABI {confine.landlock_abi()})")
    if mode in ("landlock", "unsafe-none"):
        # Made here, removed by the host: the confined worker may not delete its own root folder.
        config["jobs_root"] = tempfile.mkdtemp(prefix="code-sandbox-jobs-")
        argv = [python, "-I", "-B", str(TOOLS_DIR / "_sandbox_worker.py"), json.dumps(config)]
        return LaunchPlan(mode, argv, env, config, host_jobs_root=config["jobs_root"])
    if mode != "bwrap":
        raise ValueError(f"unknown isolation mode {mode!r}")
    bwrap = bwrap_binary()
    if bwrap is None:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed; apt-get install bubblewrap")
    if not confine.seccomp_available():
        raise SandboxUnavailable("seccomp filtering is not available on this machine")
    config["jobs_root"] = BWRAP_JOBS_ROOT
    argv = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            "--new-session", "--cap-drop", "ALL", "--hostname", "sandbox", "--clearenv"]
    if os.geteuid() == 0:  # no user namespace: the worker switches to NOBODY itself, then has no capabilities
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_CHOWN"]
        # bwrap's --tmpfs takes a size but no inode cap: the worker mounts its own jobs tmpfs over it first.
        argv += ["--cap-add", "CAP_SYS_ADMIN"]
        config["jobs_tmpfs"] = f"size={scratch_bytes},nr_inodes={JOBS_TMPFS_INODES},mode=0755"
    else:
        argv += ["--unshare-user"]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    argv += _bwrap_mounts(paths)
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(scratch_bytes), "--tmpfs", BWRAP_JOBS_ROOT]
    for name in WORKER_FILES:
        argv += ["--ro-bind", str(TOOLS_DIR / name), f"{SANDBOX_DIR}/{name}"]
    argv += ["--chdir", "/", "--", python, "-I", "-B", f"{SANDBOX_DIR}/_sandbox_worker.py", json.dumps(config)]
    return LaunchPlan(mode, argv, env, config)
