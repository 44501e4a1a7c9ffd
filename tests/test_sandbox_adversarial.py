"""Hostile programs against the code sandbox: each must be contained, and the sandbox must keep serving.

The table runs once per available isolation (bubblewrap, and the Landlock
fallback). Every entry asserts that its specific bad effect did not happen
(a marker file outside was not created, a secret is not in the output, the
host's listener got no connection, a limit stopped the job, ...). No traffic
is ever sent to a non-loopback address: name lookups fail first.
"""

import hashlib
import os
import socket
import string
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests.fault_helpers import host_shared_memory, shared_memory_growth
from tools import _sandbox_confine as confine
from tools._sandbox_launch import bwrap_binary
from tools.code_sandbox import CodeResult, CodeSandbox, SandboxLimits, SandboxUnavailable

SECRETS = {"SERPAPI_API_KEY": "serp-SECRET-4242-abcd", "OPENAI_API_KEY": "sk-SECRET-openai-9999",
           "HF_TOKEN": "hf_SECRETtokenVALUE1234"}
LIMITS = SandboxLimits(wall_time_s=3, cpu_time_s=1, memory_mb=512, max_file_mb=20, max_output_chars=2000,
                       max_output_images=4)
ROOT = Path(__file__).resolve().parent.parent


def _png_header_bomb() -> bytes:
    """A tiny PNG that declares 100000 x 100000 pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + \
        chunk(b"IEND", b"")


@dataclass
class Context:
    outside: Path
    secret_file: Path
    tcp: socket.socket
    udp: socket.socket
    passwd_digest: str

    def values(self) -> dict:
        return {"outside": self.outside, "secret_file": self.secret_file, "host_pid": os.getpid(),
                "tcp_port": self.tcp.getsockname()[1], "udp_port": self.udp.getsockname()[1],
                "project_file": Path(__file__).resolve(), "project_dir": ROOT, "sessions": ROOT / "sessions",
                "bomb": _png_header_bomb(), "ioprio_set": confine.syscall_number("ioprio_set"),
                "shmget": confine.syscall_number("shmget")}


@dataclass
class Hostile:
    name: str
    code: str
    check: Callable[[CodeResult, Context], None]


def _no_secrets(result: CodeResult, ctx: Context) -> None:
    text = f"{result.stdout}{result.stderr}{result.error}"
    for value in SECRETS.values():
        assert value not in text
    assert "FILE-SECRET-7731" not in text


def _nothing_new_outside(result: CodeResult, ctx: Context) -> None:
    assert sorted(p.name for p in ctx.outside.iterdir()) == ["secret.txt"]
    assert ctx.secret_file.read_text() == "FILE-SECRET-7731"


def _blocked(result: CodeResult, ctx: Context) -> None:
    assert not result.ok and not result.timed_out, result
    _no_secrets(result, ctx)
    _nothing_new_outside(result, ctx)


def _blocked_with(*words: str):
    def check(result: CodeResult, ctx: Context) -> None:
        _blocked(result, ctx)
        assert any(word in (result.error or "") for word in words), result.error
    return check


def _no_network(result: CodeResult, ctx: Context) -> None:
    _blocked(result, ctx)
    assert "connected" not in result.stdout
    ctx.tcp.settimeout(0.2)
    with pytest.raises(socket.timeout):
        ctx.tcp.accept()
    ctx.udp.settimeout(0.2)
    with pytest.raises(socket.timeout):
        ctx.udp.recvfrom(100)


def _printed_minus_one(result: CodeResult, ctx: Context) -> None:
    assert result.stdout.split() == ["-1"], (result.stdout, result.error)
    _nothing_new_outside(result, ctx)


def _timed_out(result: CodeResult, ctx: Context) -> None:
    assert not result.ok and result.timed_out and result.duration_s < LIMITS.wall_time_s + 5, result
    _nothing_new_outside(result, ctx)


def _out_of_memory(result: CodeResult, ctx: Context) -> None:
    assert not result.ok and result.memory_exceeded and not result.timed_out, result


def _no_outputs_because(*words: str):
    def check(result: CodeResult, ctx: Context) -> None:
        assert not result.ok and result.output_images == [], result
        assert any(word in (result.error or "") for word in words), result.error
        _nothing_new_outside(result, ctx)
        assert hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest() == ctx.passwd_digest
    return check


def _capped_output(result: CodeResult, ctx: Context) -> None:
    assert len(result.stdout) <= LIMITS.max_output_chars + 100 and "truncated" in result.stdout


def _at_most_four_images(result: CodeResult, ctx: Context) -> None:
    assert not result.ok and len(result.output_images) == 4 and "at most 4" in result.error


def _stopped_for_too_many_files(result: CodeResult, ctx: Context) -> None:
    assert not result.ok and not result.timed_out and "max_files" in (result.error or ""), result
    assert result.duration_s < LIMITS.wall_time_s, result


def _report_bounded(result: CodeResult, ctx: Context) -> None:
    """A forged fd-3 report is believed only as a small, validated shape."""
    assert len(result.error or "") <= 2000 and result.error_line is None and result.memory_exceeded is False, result
    assert "worker" not in (result.error or ""), result  # the worker survived it


LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
TABLE = [
    # network
    Hostile("tcp_to_host_loopback", "import socket\ns = socket.create_connection(('127.0.0.1', $tcp_port), 2)\n"
            "s.sendall(b'PWNED')\nprint('connected')", _no_network),
    Hostile("udp_to_host_loopback", "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto("
            "b'PWNED', ('127.0.0.1', $udp_port))\nprint('connected')", _no_network),
    Hostile("tcp_to_external_name", "import socket\nsocket.create_connection(('example.com', 80), 2)\n"
            "print('connected')", _no_network),
    Hostile("raw_socket_syscall", LIBC + "print(libc.syscall(41, 2, 1, 0))", _printed_minus_one),
    Hostile("unix_socket", "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('/run/x.sock')",
            _blocked_with("PermissionError", "Operation not permitted")),
    # reading outside
    Hostile("read_etc_passwd", "print(open('/etc/passwd').read())", _blocked),
    Hostile("list_root_home", "import os\nprint(os.listdir('/root'))\nprint(open('/root/.bashrc').read())",
            _blocked),
    Hostile("read_project_source", "print(open('$project_file').read())", _blocked),
    Hostile("list_sessions", "import os\nprint(os.listdir('$sessions'))", _blocked),
    Hostile("read_file_outside", "print(open('$secret_file').read())", _blocked),
    Hostile("read_other_jobs", "import os\nprint(os.listdir('..'))\nprint(os.listdir('/'))", _blocked),
    # secrets
    Hostile("env_secrets", "import os\nprint(dict(os.environ))", _no_secrets),
    Hostile("proc_1_environ", "print(open('/proc/1/environ').read())", _blocked),
    Hostile("host_environ", "print(open('/proc/$host_pid/environ').read())", _blocked),
    Hostile("parent_environ", "import os\nprint(open(f'/proc/{os.getppid()}/environ').read())", _blocked),
    Hostile("scan_all_environs", "import os\nfor pid in os.listdir('/proc'):\n    try:\n"
            "        print(open(f'/proc/{pid}/environ').read())\n    except OSError:\n        pass\n"
            "print(open('/proc/self/environ').read())", _no_secrets),
    # writing outside
    Hostile("write_outside", "open('$outside/pwned.txt', 'w').write('x')", _blocked),
    Hostile("write_host_tmp", "open('/tmp/code-sandbox-pwned', 'w').write('x')", _blocked),
    Hostile("overwrite_outside_secret", "open('$secret_file', 'w').write('gone')", _blocked),
    Hostile("write_project", "open('$project_dir/PWNED', 'w').write('x')", _blocked),
    Hostile("forge_own_stdout_capture", "open('../stdout', 'w').write('forged')", _blocked),
    # processes
    Hostile("fork_bomb", "import os\nwhile True:\n    os.fork()", _blocked_with("Operation not permitted")),
    Hostile("os_fork", "import os\nprint('forked', os.fork())", _blocked_with("Operation not permitted")),
    Hostile("subprocess", "import subprocess\nsubprocess.run(['touch', '$outside/sub.txt'])", _blocked),
    Hostile("os_system", "import os\nassert os.system('touch $outside/sys.txt') == 0", _blocked),
    Hostile("os_exec", "import os\nos.execv('/bin/sh', ['sh', '-c', 'touch $outside/exec.txt'])", _blocked),
    Hostile("multiprocessing", "import multiprocessing\nmultiprocessing.Process(target=print).start()", _blocked),
    Hostile("ctypes_fork", LIBC + "print(libc.fork())", _printed_minus_one),
    # signals, ptrace, other processes
    Hostile("kill_parent", "import os\nos.kill(os.getppid(), 9)", _blocked_with("Operation not permitted")),
    Hostile("kill_host", "import os\nos.kill($host_pid, 9)", _blocked),
    Hostile("kill_everything", "import os\nos.kill(-1, 9)", _blocked_with("Operation not permitted")),
    Hostile("killpg_worker", "import os\nos.killpg(os.getpgid(os.getppid()), 9)", _blocked),
    Hostile("ptrace_parent", LIBC + "print(libc.ptrace(16, os.getppid(), 0, 0))", _printed_minus_one),
    Hostile("ptrace_host", LIBC + "print(libc.ptrace(16, $host_pid, 0, 0))", _printed_minus_one),
    # limits
    Hostile("memory_bomb", "x = bytearray(8 * 2**30)", _out_of_memory),
    Hostile("memory_creep", "import numpy as np\nchunks = []\nwhile True:\n"
            "    chunks.append(np.zeros(64 * 2**20, np.uint8))", _out_of_memory),
    Hostile("infinite_loop", "while True:\n    pass", _timed_out),
    Hostile("sleep_forever", "import time\ntime.sleep(10**6)", _timed_out),
    Hostile("cpu_spin_threads", "import threading\ndef spin():\n    while True:\n        pass\n"
            "for _ in range(4):\n    threading.Thread(target=spin).start()", _timed_out),
    Hostile("ignore_cpu_signal", "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n"
            "    pass", _timed_out),
    Hostile("raise_memory_rlimit", "import resource\ntry:\n    resource.setrlimit(resource.RLIMIT_AS, (-1, -1))\n"
            "except Exception:\n    pass\nx = bytearray(4 * 2**30)", _out_of_memory),
    Hostile("raise_cpu_rlimit", "import resource\ntry:\n    resource.setrlimit(resource.RLIMIT_CPU, (-1, -1))\n"
            "except Exception:\n    pass\nwhile True:\n    pass", _timed_out),
    Hostile("huge_stdout", "while True:\n    print('A' * 10000)", _capped_output),
    Hostile("huge_file", "open('big.bin', 'wb').write(b'0' * (100 * 2**20))", _blocked_with("File too large")),
    Hostile("many_output_images", "import numpy as np, cv2\nfor i in range(20):\n"
            "    cv2.imwrite(f'out{i:02d}.png', np.zeros((8, 8), np.uint8))", _at_most_four_images),
    Hostile("output_100_megapixels", "import numpy as np, cv2\n"
            "cv2.imwrite('big.png', np.zeros((10000, 10000), np.uint8))", _no_outputs_because("pixel")),
    Hostile("png_header_bomb", "open('path_to_output_image.jpg'.replace('.jpg', '.png'), 'wb').write($bomb)",
            _no_outputs_because("pixel", "not a readable image")),
    # links and special files
    Hostile("symlink_output_to_passwd", "import os\nos.symlink('/etc/passwd', 'path_to_output_image.jpg')",
            _no_outputs_because("ermission", "symbolic link")),
    Hostile("symlink_dir_escape", "import os\nos.symlink('$outside', 'escape')\nopen('escape/x.txt', 'w')", _blocked),
    Hostile("hardlink_input_as_output", "import os\nos.link('path_to_input_image.jpg', 'path_to_output_image.jpg')",
            _no_outputs_because("hard link", "ermission")),
    Hostile("hardlink_passwd", "import os\nos.link('/etc/passwd', 'passwd.png')", _blocked),
    Hostile("fifo_output", "import os\nos.mkfifo('path_to_output_image.jpg')",
            _no_outputs_because("ermission", "not a plain file")),
    # escaping the confinement itself
    Hostile("unshare_namespace", LIBC + "print(libc.unshare(0x10000000))", _printed_minus_one),
    Hostile("mount_tmpfs", LIBC + "print(libc.mount(b'none', b'.', b'tmpfs', 0, None))", _printed_minus_one),
    Hostile("chroot", "import os\nos.chroot('.')", _blocked),
    Hostile("become_root", "import os\nos.setuid(0)\nopen('/etc/pwned', 'w')", _blocked),
    Hostile("device_access", "print(open('/dev/mem', 'rb').read(10))", _blocked),
    Hostile("close_fds_then_import", "import os\nos.closerange(0, 4096)\nimport email.mime.text, json, "
            "xml.dom.minidom\nopen('$outside/late.txt', 'w')", _nothing_new_outside),
    # memory the address-space limit does not count
    Hostile("memfd_pages", "import os\nfds = []\nfor _ in range(60):\n    fd = os.memfd_create('x')\n"
            "    os.write(fd, b'a' * (20 * 2**20))\n    fds.append(fd)", _blocked_with("Operation not permitted")),
    Hostile("sysv_shared_memory", LIBC + "print(libc.syscall($shmget, 0, 256 * 2**20, 0o1600))",
            _printed_minus_one),
    Hostile("posix_shared_memory", "from multiprocessing import shared_memory\n"
            "shared_memory.SharedMemory(create=True, size=256 * 2**20)", _blocked),
    # the shared warm worker's scheduling
    Hostile("renice_worker", "import os\nos.setpriority(os.PRIO_PROCESS, os.getppid(), 19)",
            _blocked_with("Operation not permitted")),
    Hostile("renice_every_process_of_the_uid", "import os\nos.setpriority(os.PRIO_USER, 0, 19)",
            _blocked_with("Operation not permitted")),
    Hostile("pin_worker_to_one_cpu", "import os\nos.sched_setaffinity(os.getppid(), {0})",
            _blocked_with("Operation not permitted")),
    Hostile("sched_idle_worker", "import os\nos.sched_setscheduler(os.getppid(), os.SCHED_IDLE, os.sched_param(0))",
            _blocked_with("Operation not permitted")),
    Hostile("idle_io_priority_for_worker", LIBC + "print(libc.syscall($ioprio_set, 1, os.getppid(), 3 << 13))",
            _printed_minus_one),
    # files and the fd-3 report
    Hostile("millions_of_empty_files", "i = 0\nwhile True:\n    open(f'f{i}', 'w').close()\n    i += 1",
            _stopped_for_too_many_files),
    Hostile("forged_report", "import json, os, time\nos.write(3, json.dumps({'ok': True, 'error': 'E' * 30000, "
            "'error_line': 10**30, 'memory_error': 'yes', 'stdout': 'forged'}).encode())\nos.close(3)\n"
            "time.sleep(0.5)", _report_bounded),
    Hostile("report_nested_too_deep", "import os\nos.write(3, b'[' * 30000)\nos.close(3)", _report_bounded),
]


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    secret_file = outside / "secret.txt"
    secret_file.write_text("FILE-SECRET-7731")
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(5)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    yield Context(outside, secret_file, tcp, udp, hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest())
    tcp.close()
    udp.close()


def _available_modes() -> list:
    modes = []
    for mode, usable in (("bwrap", bwrap_binary() is not None), ("landlock", confine.landlock_abi() > 0)):
        modes.append(pytest.param(mode, marks=pytest.mark.skipif(not usable, reason=f"{mode} unavailable")))
    return modes


@pytest.fixture(scope="module", params=_available_modes())
def sandbox(request):
    saved = {key: os.environ.get(key) for key in SECRETS}
    os.environ.update(SECRETS)  # the host has the keys; jobs must never see them
    try:
        try:
            box = CodeSandbox(LIMITS, isolation=request.param)
        except SandboxUnavailable as exc:  # e.g. bwrap installed but namespaces refused (containers)
            pytest.skip(f"{request.param} cannot run here: {exc}")
        box.first_worker_pid = box._worker.proc.pid
        yield box
        box.close()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    from PIL import Image
    path = tmp_path_factory.mktemp("input") / "input.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path)
    return path


def test_the_table_is_large_enough():
    assert len(TABLE) >= 25 and len({h.name for h in TABLE}) == len(TABLE)


@pytest.mark.parametrize("hostile", TABLE, ids=[h.name for h in TABLE])
def test_hostile_program_is_contained(hostile, sandbox, context, image, tmp_path):
    code = string.Template(hostile.code).substitute(context.values())
    result = sandbox.run(code, image, tmp_path / "job")
    hostile.check(result, context)
    assert not Path("/tmp/code-sandbox-pwned").exists() and not (ROOT / "PWNED").exists()
    for path in result.output_images:
        assert Path(path).resolve().parent == (tmp_path / "job").resolve()


def test_sandbox_still_serves_after_the_table(sandbox, image, tmp_path):
    assert sandbox._worker.alive and sandbox._worker.proc.pid == sandbox.first_worker_pid  # never restarted
    code = ("import cv2\nimage = cv2.imread('path_to_input_image.jpg')\n"
            "cv2.imwrite('path_to_output_image.jpg', cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE))\nprint('done')")
    result = sandbox.run(code, image, tmp_path)
    assert result.ok and result.stdout == "done\n"
    from PIL import Image
    with Image.open(result.output_images[0]) as output:
        assert output.size == (48, 64)


# --- side channels the table cannot see from a result alone ------------------------------------------------

SHARED_MEMORY_HOG = """import ctypes, mmap, os
libc = ctypes.CDLL(None, use_errno=True)
held = []
for _ in range(60):
    try:
        fd = os.memfd_create('hog')
        os.write(fd, b'a' * (20 * 2**20))
        held.append(fd)
    except OSError:
        break
for _ in range(8):
    segment = libc.syscall($shmget, 0, 64 * 2**20, 0o1600)
    if segment >= 0:
        address = ctypes.c_void_p(libc.shmat(segment, None, 0))
        ctypes.memset(address, 1, 64 * 2**20)
print(len(held))
"""


def test_hostile_job_cannot_grow_host_shared_memory_beyond_its_limit(sandbox, context, image):
    code = string.Template(SHARED_MEMORY_HOG).substitute(context.values())
    result, baseline, growth = shared_memory_growth(lambda: sandbox.run(code, image))
    assert growth <= LIMITS.memory_mb * 2**20, (result, growth / 2**20)
    time.sleep(0.2)
    assert host_shared_memory() - baseline < 64 * 2**20  # nothing outlived the job (System V segments would)


@pytest.mark.parametrize("max_files", [LIMITS.max_files, 10**7], ids=["default_cap", "no_per_job_cap"])
def test_a_job_making_files_does_not_hold_up_the_next_job(sandbox, image, max_files):
    quick = "print('next')"
    sandbox.run(quick, image)
    started = time.monotonic()
    sandbox.run(quick, image)
    baseline = time.monotonic() - started
    hog = replace(LIMITS, wall_time_s=6, cpu_time_s=6, max_files=max_files)
    sandbox.run("i = 0\nwhile True:\n    open(f'f{i}', 'w').close()\n    i += 1", image, limits=hog)
    started = time.monotonic()
    result = sandbox.run(quick, image)
    delay = time.monotonic() - started - baseline
    assert result.ok and result.stdout == "next\n", result
    assert delay <= 1.0, f"the next job waited {delay:.2f} s longer than usual"


SCHEDULING = ("import os\nprint(os.getpriority(os.PRIO_PROCESS, 0), sorted(os.sched_getaffinity(0)), "
              "os.sched_getscheduler(0))")
CHANGE_SCHEDULING = """import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
for target in (os.getppid(), 0):
    for change in (lambda: os.setpriority(os.PRIO_PROCESS, target, 19), lambda: os.sched_setaffinity(target, {0}),
                   lambda: os.sched_setscheduler(target, os.SCHED_IDLE, os.sched_param(0))):
        try:
            change()
        except OSError:
            pass
    libc.syscall($ioprio_set, 1, target, 3 << 13)
for change in (lambda: os.setpriority(os.PRIO_USER, 0, 19), lambda: os.setpriority(os.PRIO_PGRP, 0, 19)):
    try:
        change()
    except OSError:
        pass
print(os.getpriority(os.PRIO_PROCESS, os.getppid()))
"""


def test_no_job_can_change_the_workers_scheduling(sandbox, context, image):
    before = sandbox.run(SCHEDULING, image)
    sandbox.run(string.Template(CHANGE_SCHEDULING).substitute(context.values()), image)
    after = sandbox.run(SCHEDULING, image)
    assert before.ok and after.ok and after.stdout == before.stdout, (before.stdout, after.stdout)


def test_as_root_the_bwrap_jobs_tmpfs_caps_inodes(sandbox, image):
    if sandbox.isolation_in_use != "bwrap" or os.geteuid() != 0:
        pytest.skip("the worker mounts its own inode-capped tmpfs only as root under bubblewrap")
    assert "nr_inodes=" in (sandbox.isolation_details["jobs_tmpfs"] or "")
    uncapped = replace(LIMITS, max_files=10**7, wall_time_s=10, cpu_time_s=10)
    result = sandbox.run("import os\ni = 0\ntry:\n    while True:\n        open(f'f{i}', 'w').close()\n"
                         "        i += 1\nexcept OSError as exc:\n    print(i, exc.errno)", image, limits=uncapped)
    count, code = map(int, result.stdout.split())
    assert code == 28 and count < 20000 and not result.timed_out  # ENOSPC at the inode cap, long before the wall
