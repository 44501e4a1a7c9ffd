"""Kernel confinement primitives for the code sandbox: Landlock, seccomp, rlimits, capabilities.

Owns the raw Linux calls (through ctypes, no extra packages) that the sandbox
worker applies to itself and to every job process it forks:

- Landlock (ABI >= 1; signal/abstract-socket scoping from ABI 6, TCP rules
  from ABI 4): file access limited to read-only library folders plus one
  read-write folder; symlink, device, FIFO and socket creation, hard links
  and renames across folders (REFER) are never granted.
- A seccomp BPF filter (x86_64 and aarch64) that fails with EPERM: sockets,
  execve, process creation (clone without CLONE_THREAD, fork, vfork; clone3
  gets ENOSYS so libc falls back to clone), ptrace and process_vm_*, signals
  to anything but the job itself, raising rlimits, mounts and namespaces,
  kernel keyrings, BPF, perf, io_uring, module loading and similar; memfd
  and System V shared memory (memory RLIMIT_AS does not count); and, for
  jobs, changing scheduling, priority, CPU affinity, I/O priority or memory
  placement (of itself or of the worker it shares a uid with).
- rlimits, capability dropping, PR_SET_DUMPABLE / PDEATHSIG / NO_NEW_PRIVS.

This module is imported both as `tools._sandbox_confine` (host, for probing
and PR_SET_DUMPABLE) and as a top-level module by the worker, so it imports
only the standard library.
"""

import ctypes
import errno
import os
import platform
import resource
import stat
import struct

_libc = ctypes.CDLL(None, use_errno=True)
if hasattr(_libc, "prctl"):  # Linux; elsewhere importing still works and the sandbox refuses to start
    _libc.syscall.restype = ctypes.c_long
    _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_CAPBSET_DROP = 24

# name: (x86_64 number, asm-generic number used by aarch64); None = not on that arch.
SYSCALLS = {
    "socket": (41, 198), "socketpair": (53, 199), "clone": (56, 220), "fork": (57, None),
    "vfork": (58, None), "execve": (59, 221), "execveat": (322, 281), "kill": (62, 129),
    "tkill": (200, 130), "tgkill": (234, 131), "ptrace": (101, 117), "setrlimit": (160, 164),
    "prlimit64": (302, 261), "rt_sigqueueinfo": (129, 138), "rt_tgsigqueueinfo": (297, 240),
    "process_vm_readv": (310, 270), "process_vm_writev": (311, 271), "mount": (165, 40),
    "umount2": (166, 39), "pivot_root": (155, 41), "chroot": (161, 51), "unshare": (272, 97),
    "setns": (308, 268), "bpf": (321, 280), "perf_event_open": (298, 241), "keyctl": (250, 219),
    "add_key": (248, 217), "request_key": (249, 218), "init_module": (175, 105),
    "finit_module": (313, 273), "delete_module": (176, 106), "kexec_load": (246, 104),
    "kexec_file_load": (320, 294), "reboot": (169, 142), "swapon": (167, 224), "swapoff": (168, 225),
    "acct": (163, 89), "userfaultfd": (323, 282), "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426), "io_uring_register": (427, 427), "open_by_handle_at": (304, 265),
    "name_to_handle_at": (303, 264), "personality": (135, 92), "clone3": (435, 435),
    "pidfd_open": (434, 434), "pidfd_send_signal": (424, 424), "pidfd_getfd": (438, 438),
    "kcmp": (312, 272), "iopl": (172, None), "ioperm": (173, None), "sethostname": (170, 161),
    "setdomainname": (171, 162), "settimeofday": (164, 170), "clock_settime": (227, 112),
    "adjtimex": (159, 171), "clock_adjtime": (305, 266), "mknod": (133, None), "mknodat": (259, 33),
    "quotactl": (179, 60), "quotactl_fd": (443, 443), "lookup_dcookie": (212, 18),
    "fanotify_init": (300, 262), "process_madvise": (440, 440), "move_mount": (429, 429),
    "open_tree": (428, 428), "fsopen": (430, 430), "fsconfig": (431, 431), "fsmount": (432, 432),
    "fspick": (433, 433), "mount_setattr": (442, 442), "memfd_secret": (447, 447),
    "uselib": (134, None), "vhangup": (153, 58),
    "landlock_create_ruleset": (444, 444), "landlock_add_rule": (445, 445),
    "landlock_restrict_self": (446, 446),
    "memfd_create": (319, 279), "shmget": (29, 194), "shmat": (30, 196), "msgget": (68, 186),
    "semget": (64, 190), "setpriority": (141, 140), "sched_setparam": (142, 118),
    "sched_setscheduler": (144, 119), "sched_setaffinity": (203, 122), "sched_setattr": (314, 274),
    "ioprio_set": (251, 30), "migrate_pages": (256, 238), "move_pages": (279, 239),
    "set_mempolicy": (238, 237), "mbind": (237, 235),
}
_ARCHES = {"x86_64": (0, 0xC000003E), "aarch64": (1, 0xC00000B7)}

# Never needed by image code, dangerous in hostile hands: EPERM for worker and job alike.
ALWAYS_DENIED = (
    "socket", "socketpair", "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "bpf", "perf_event_open", "keyctl",
    "add_key", "request_key", "init_module", "finit_module", "delete_module", "kexec_load",
    "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "userfaultfd", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "open_by_handle_at", "name_to_handle_at", "personality",
    "pidfd_getfd", "kcmp", "iopl", "ioperm", "sethostname", "setdomainname", "settimeofday",
    "clock_settime", "adjtimex", "clock_adjtime", "mknod", "mknodat", "quotactl", "quotactl_fd",
    "lookup_dcookie", "fanotify_init", "process_madvise", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "memfd_secret", "uselib", "vhangup",
    # Memory outside RLIMIT_AS: memfd pages and System V segments (which outlive the job in the
    # landlock fallback, where the host's IPC namespace is shared). Neither worker nor job needs them.
    "memfd_create", "shmget", "shmat", "msgget", "semget",
)
# Additionally denied inside a job (the worker itself needs them to manage jobs).
JOB_DENIED = ("fork", "vfork", "tkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_open",
              "pidfd_send_signal", "setrlimit",
              # Scheduling, I/O priority and memory placement: the worker shares the job's uid, so a job
              # could otherwise renice or pin the warm worker (and every later job it forks).
              "setpriority", "sched_setparam", "sched_setscheduler", "sched_setaffinity", "sched_setattr",
              "ioprio_set", "migrate_pages", "move_pages", "set_mempolicy", "mbind")

CLONE_THREAD = 0x00010000


def machine_arch() -> str | None:
    """The seccomp-supported architecture name, or None."""
    machine = platform.machine().lower()
    return {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(machine)


def syscall_number(name: str, arch: str | None = None) -> int | None:
    arch = arch or machine_arch()
    if arch is None:
        return None
    return SYSCALLS[name][_ARCHES[arch][0]]


def _raise_errno(what: str) -> None:
    code = ctypes.get_errno()
    raise OSError(code, f"{what}: {os.strerror(code)}")


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> None:
    if _libc.prctl(option, arg2, arg3, 0, 0) != 0:
        _raise_errno(f"prctl({option})")


def set_dumpable(flag: bool) -> None:
    """0 hides /proc/<pid>/environ, mem, maps from same-uid processes and blocks their ptrace."""
    prctl(PR_SET_DUMPABLE, 1 if flag else 0)


def die_with_parent(sig: int = 9) -> None:
    prctl(PR_SET_PDEATHSIG, sig)


# --- seccomp ---------------------------------------------------------------------------------

_BPF_LD_W_ABS, _BPF_JEQ, _BPF_JSET, _BPF_JGE, _BPF_RET = 0x20, 0x15, 0x45, 0x35, 0x06
_RET_ALLOW, _RET_KILL_PROCESS, _RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000


class _Assembler:
    """A tiny BPF assembler whose jumps name labels instead of counting instructions."""

    def __init__(self):
        self.code: list[tuple] = []
        self.labels: dict[str, int] = {}

    def load(self, offset: int):
        self.code.append((_BPF_LD_W_ABS, None, None, offset))

    def jump(self, op: int, value: int, if_true: str | None, if_false: str | None = None):
        self.code.append((op, if_true, if_false, value & 0xFFFFFFFF))

    def ret(self, value: int):
        self.code.append((_BPF_RET, None, None, value))

    def label(self, name: str):
        self.labels[name] = len(self.code)

    def assemble(self) -> bytes:
        out = b""
        for index, (op, if_true, if_false, k) in enumerate(self.code):
            jt = self.labels[if_true] - index - 1 if if_true else 0
            jf = self.labels[if_false] - index - 1 if if_false else 0
            if not (0 <= jt < 256 and 0 <= jf < 256):
                raise ValueError("seccomp program too long for BPF jumps")
            out += struct.pack("HBBI", op, jt, jf, k)
        return out


def _arg_low(index: int) -> int:
    return 16 + 8 * index  # seccomp_data.args[i], low 32 bits on little-endian


def build_seccomp_filter(job_pid: int | None, arch: str | None = None) -> bytes:
    """The BPF program; `job_pid` set = the stricter job filter, None = the worker filter."""
    arch = arch or machine_arch()
    if arch is None:
        raise OSError(errno.ENOSYS, f"seccomp filter not available for {platform.machine()}")
    column, audit_arch = _ARCHES[arch]

    def numbers(names):
        return [n for n in (SYSCALLS[name][column] for name in names) if n is not None]

    asm = _Assembler()
    asm.load(4)  # seccomp_data.arch
    asm.jump(_BPF_JEQ, audit_arch, None, "kill")
    asm.load(0)  # seccomp_data.nr
    if arch == "x86_64":
        asm.jump(_BPF_JGE, 0x40000000, "kill")  # x32 ABI calls
    denied = list(ALWAYS_DENIED) + (list(JOB_DENIED) if job_pid is not None else [])
    for number in numbers(denied):
        asm.jump(_BPF_JEQ, number, "eperm")
    asm.jump(_BPF_JEQ, SYSCALLS["clone3"][column], "enosys")
    if job_pid is not None:
        asm.jump(_BPF_JEQ, SYSCALLS["clone"][column], "clone")
        asm.jump(_BPF_JEQ, SYSCALLS["kill"][column], "kill_call")
        asm.jump(_BPF_JEQ, SYSCALLS["tgkill"][column], "tgkill_call")
        asm.jump(_BPF_JEQ, SYSCALLS["prlimit64"][column], "prlimit")
    asm.ret(_RET_ALLOW)
    if job_pid is not None:
        asm.label("clone")  # threads yes, processes no
        asm.load(_arg_low(0))
        asm.jump(_BPF_JSET, CLONE_THREAD, "allow", "eperm")
        asm.label("kill_call")  # only itself or its own process group
        asm.load(_arg_low(0))
        asm.jump(_BPF_JEQ, job_pid, "allow")
        asm.jump(_BPF_JEQ, 0, "allow")
        asm.jump(_BPF_JEQ, -job_pid, "allow", "eperm")
        asm.label("tgkill_call")
        asm.load(_arg_low(0))
        asm.jump(_BPF_JEQ, job_pid, "allow", "eperm")
        asm.label("prlimit")  # reading limits is fine, setting them is not
        asm.load(_arg_low(2))
        asm.jump(_BPF_JEQ, 0, None, "eperm")
        asm.load(_arg_low(2) + 4)
        asm.jump(_BPF_JEQ, 0, "allow", "eperm")
    asm.label("allow")
    asm.ret(_RET_ALLOW)
    asm.label("eperm")
    asm.ret(_RET_ERRNO | errno.EPERM)
    asm.label("enosys")
    asm.ret(_RET_ERRNO | errno.ENOSYS)
    asm.label("kill")
    asm.ret(_RET_KILL_PROCESS)
    return asm.assemble()


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_seccomp(job_pid: int | None) -> None:
    """Install the filter on the calling process (all threads); irreversible."""
    program = build_seccomp_filter(job_pid)
    buffer = ctypes.create_string_buffer(program)
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    seccomp_nr = {"x86_64": 317, "aarch64": 277}[machine_arch()]
    SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC = 1, 1
    if _libc.syscall(seccomp_nr, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, ctypes.byref(fprog)) != 0:
        _raise_errno("seccomp")


def seccomp_available() -> bool:
    """The filter can be built for this CPU and the kernel has seccomp filtering."""
    if machine_arch() is None:
        return False
    try:
        with open("/proc/self/status") as status:
            return any(line.startswith("Seccomp:") for line in status)
    except OSError:
        return False


# --- Landlock --------------------------------------------------------------------------------

FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_REMOVE_DIR, FS_REMOVE_FILE, FS_MAKE_CHAR, FS_MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
FS_MAKE_REG, FS_MAKE_SOCK, FS_MAKE_FIFO, FS_MAKE_BLOCK = 1 << 8, 1 << 9, 1 << 10, 1 << 11
FS_MAKE_SYM, FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 12, 1 << 13, 1 << 14, 1 << 15
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

READ_ONLY = FS_READ_FILE | FS_READ_DIR
READ_WRITE = (READ_ONLY | FS_WRITE_FILE | FS_REMOVE_DIR | FS_REMOVE_FILE | FS_MAKE_DIR | FS_MAKE_REG
              | FS_TRUNCATE)
_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is missing or disabled."""
    version = _libc.syscall(SYSCALLS["landlock_create_ruleset"][0], None, 0, 1)  # same nr on both arches
    return max(int(version), 0)


def _handled_fs(abi: int) -> int:
    handled = (1 << 13) - 1
    if abi >= 2:
        handled |= FS_REFER
    if abi >= 3:
        handled |= FS_TRUNCATE
    if abi >= 5:
        handled |= FS_IOCTL_DEV
    return handled


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_restrict(rules: list[tuple[int, int]], abi: int) -> None:
    """Restrict the calling thread to `rules` [(O_PATH fd, rights)]; everything else is denied.

    On ABI >= 4 all TCP bind/connect is denied; on ABI >= 6 signals and
    abstract unix sockets cannot reach processes outside the new domain.
    """
    handled_fs = _handled_fs(abi)
    attr = struct.pack("Q", handled_fs)
    if abi >= 4:
        attr += struct.pack("Q", NET_BIND_TCP | NET_CONNECT_TCP)
    if abi >= 6:
        attr += struct.pack("Q", SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL)
    attr_buffer = ctypes.create_string_buffer(attr, len(attr))
    ruleset = _libc.syscall(444, attr_buffer, len(attr), 0)
    if ruleset < 0:
        _raise_errno("landlock_create_ruleset")
    try:
        for fd, rights in rules:
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                rights &= _FILE_RIGHTS  # a file rule may only carry file rights
            beneath = _PathBeneath(rights & handled_fs, fd)
            if _libc.syscall(445, ruleset, 1, ctypes.byref(beneath), 0) != 0:
                _raise_errno("landlock_add_rule")
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        if _libc.syscall(446, ruleset, 0) != 0:
            _raise_errno("landlock_restrict_self")
    finally:
        os.close(ruleset)


def open_rule_paths(paths: list[tuple[str, int]]) -> list[tuple[int, int]]:
    """O_PATH fds for the paths that exist (missing ones are skipped)."""
    rules = []
    for path, rights in paths:
        try:
            rules.append((os.open(path, os.O_PATH | os.O_CLOEXEC), rights))
        except OSError:
            continue
    return rules


# --- rlimits and identity --------------------------------------------------------------------

def virtual_memory_bytes(statm_fd: int) -> int:
    """Address-space size (VmSize) read from an open /proc/<pid>/statm (works after Landlock)."""
    return int(os.pread(statm_fd, 256, 0).split()[0]) * os.sysconf("SC_PAGE_SIZE")


def set_job_rlimits(*, address_space: int, cpu_seconds: float, file_bytes: int, open_files: int) -> None:
    def cap(limit, soft, hard=None):
        resource.setrlimit(limit, (soft, soft if hard is None else hard))

    cpu = max(1, int(-(-cpu_seconds // 1)))
    cap(resource.RLIMIT_CPU, cpu, cpu + 1)  # SIGXCPU at the soft limit, SIGKILL one second later
    cap(resource.RLIMIT_AS, address_space)
    cap(resource.RLIMIT_FSIZE, file_bytes)
    cap(resource.RLIMIT_NOFILE, open_files)
    cap(resource.RLIMIT_CORE, 0)
    cap(resource.RLIMIT_MEMLOCK, 0)
    cap(resource.RLIMIT_MSGQUEUE, 0)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> None:
    """Empty the bounding, ambient, effective, permitted and inheritable capability sets."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except OSError:
        last = 40
    for cap in range(last + 1):
        _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # fails harmlessly without CAP_SETPCAP
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = _CapHeader(0x20080522, 0)
    data = (_CapData * 2)()
    if _libc.capset(ctypes.byref(header), data) != 0:
        _raise_errno("capset")


def effective_capabilities() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def mount_tmpfs(path: str, options: str) -> None:
    """Mount a fresh tmpfs with `options` (e.g. "size=N,nr_inodes=M,mode=0755") on `path`; needs CAP_SYS_ADMIN."""
    if _libc.mount(b"tmpfs", path.encode(), b"tmpfs", 0, options.encode()) != 0:
        _raise_errno(f"mount tmpfs on {path}")


def become_user(uid: int, gid: int) -> None:
    """Switch every id to uid/gid (needs root); capabilities are cleared by the switch."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
