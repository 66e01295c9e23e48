"""rolekit sandbox worker: a fork server that runs one untrusted program per request.

``rolekit.sandbox`` starts this file's text as ``python -s -B -c <text> <config JSON>``,
inside bwrap (where it is PID 1 of the sandbox's PID namespace) or under rlimits alone.
It reads one JSON job per line on stdin and writes one JSON reply per line on stdout.
Standard library only: it runs on the sandbox's interpreter, never imports rolekit.

Per job it forks a child that calls ``setsid``, takes the job's stdin (a memfd) and two
pipes as fds 0-2, closes every other fd (the control pipes included), enters a fresh
directory, sets its rlimits, drops to the configured uid, sets no_new_privs and runs the
code as ``python -c`` would (fresh ``__main__``, ``sys.argv == ["-c"]``, SystemExit and
uncaught exceptions turned into an exit status). The worker enforces the wall-clock
timeout and the output cap, then kills every process the program left behind (each one
is its descendant: it is the PID namespace's init, or a child subreaper) and removes
what the program wrote.
"""

import ctypes
import gc
import json
import math
import os
import resource
import select
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
SETUP_FAILED = 125  # the child's exit status when it could not set itself up (see the program's stderr)
DRAIN_S = 1.0  # how long output left in the pipes may take to read once every writer is dead
CLEANUP_S = 5.0  # how long killing the processes a program left behind may take

_libc = ctypes.CDLL(None, use_errno=True)


def prctl(option, value):
    if _libc.prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)):
        errno = ctypes.get_errno()
        raise OSError(errno, "prctl(%d): %s" % (option, os.strerror(errno)))


def main():
    config = json.loads(sys.argv[1])
    sys.path[:] = [p for p in sys.path if p]  # no '' (the cwd) on the path, as with python -I
    os.environ.pop("PWD", None)  # bwrap's --chdir sets it: the environment is rolekit's ENV alone
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as PID 1, no signal from a program may stop us
    prctl(PR_SET_DUMPABLE, 0)  # programs run as our uid in bwrap: no ptrace, no /proc/1/fd or /mem
    prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphaned descendants are re-parented to us, not to init
    jobs = os.fdopen(os.dup(0), "rb")  # os.dup: not inherited by what a program execs
    replies = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    exec(compile("pass", "<string>", "exec"), {})  # the first compile in a process is slow: not in every child
    gc.freeze()  # what the worker allocated so far is never touched by a child's collections (fewer copied pages)
    send(replies, {"ready": True, "python": sys.executable, "version": sys.version.split()[0], "uid": os.getuid()})
    for n, line in enumerate(jobs):
        try:
            reply = run_job(json.loads(line), config, n)
        except Exception as exc:  # the worker itself failed: say so and stop; rolekit replaces us
            reply = {"error": "%s: %s" % (type(exc).__name__, exc), "damaged": True}
        send(replies, reply)
        if reply.get("damaged"):
            break


def send(stream, message):
    stream.write(json.dumps(message).encode() + b"\n")
    stream.flush()


def run_job(job, config, n):
    rundir = os.path.join(config["tmp"], "rolekit-run-%d-%d-%s" % (os.getpid(), n, os.urandom(4).hex()))
    os.mkdir(rundir, 0o700)
    if config["uid"] is not None:
        os.chown(rundir, config["uid"], config["gid"])
    stdin = os.memfd_create("stdin")
    os.write(stdin, job["stdin"].encode())  # a memfd takes any size in one write
    os.lseek(stdin, 0, os.SEEK_SET)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    sys.stderr.flush()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            child(job, config, rundir, stdin, out_w, err_w)
        except BaseException as exc:
            os.write(2, ("rolekit sandbox: could not set the program up: %r\n" % exc).encode())
        finally:
            os._exit(SETUP_FAILED)
    for fd in (stdin, out_w, err_w):
        os.close(fd)
    cap = config["max_output"]
    out, err = bytearray(), bytearray()
    streams = {out_r: out, err_r: err}
    exited, over = watch(pid, streams, start + job["timeout_s"], cap)
    seconds = time.monotonic() - start
    if not exited:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    _, status = os.waitpid(pid, 0)
    cleaned = kill_the_rest()
    drained = drain(streams, cap)
    removed = clear(rundir, config["clear"])
    return {
        "stdout": bytes(out[:cap]).decode("utf-8", "replace"),
        "stderr": bytes(err[:cap]).decode("utf-8", "replace"),
        "returncode": os.waitstatus_to_exitcode(status),
        "timed_out": not exited and not over,
        "output_limit": over or len(out) > cap or len(err) > cap,
        "seconds": seconds,
        "damaged": not (cleaned and drained and removed),
    }


def watch(pid, streams, deadline, cap):
    """Read the program's output until it exits, writes more than ``cap`` or runs past ``deadline``.

    Returns (exited, over); a stream is dropped from ``streams`` (and closed) at its end.
    """
    pidfd = os.pidfd_open(pid)
    exited = over = False
    try:
        while not exited and not over:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select(list(streams) + [pidfd], [], [], left)
            for fd in ready:
                if fd == pidfd:
                    exited = True
                    continue
                data = os.read(fd, 1 << 16)
                if not data:
                    os.close(fd)
                    del streams[fd]
                    continue
                streams[fd] += data
                over = over or len(streams[fd]) > cap
    finally:
        os.close(pidfd)
    return exited, over


def drain(streams, cap):
    """Read what is left in the pipes (every writer is dead now); False if one stays open."""
    deadline = time.monotonic() + DRAIN_S
    while streams:
        left = deadline - time.monotonic()
        ready, _, _ = select.select(list(streams), [], [], max(left, 0))
        if not ready:
            for fd in streams:
                os.close(fd)
            return False
        for fd in ready:
            data = os.read(fd, 1 << 16)
            if not data or len(streams[fd]) > cap:
                os.close(fd)
                del streams[fd]
            else:
                streams[fd] += data
    return True


def kill_the_rest():
    """SIGKILL every process left in the sandbox and reap it; False if some survive CLEANUP_S."""
    deadline = time.monotonic() + CLEANUP_S
    while time.monotonic() < deadline:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:  # no children left, so no descendants: every orphan comes to us
            return True
        if os.getpid() == 1:  # init of the sandbox's PID namespace: -1 is everyone in it but us
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
        else:
            for pid in descendants():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        time.sleep(0.001)
    return False


def descendants():
    """The pids of every process below this one, from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [os.getpid()]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def clear(rundir, extra):
    """Remove the run's directory and empty the sandbox's other writable places."""
    try:
        remove(rundir)
        for top in extra:
            for name in os.listdir(top):
                remove(os.path.join(top, name))
        return True
    except OSError:
        return False


def remove(top):
    """Delete ``top`` and everything under it, whatever modes the program set (no symlink is followed)."""
    stack = [top]
    while stack:
        path = stack[-1]
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
            stack.pop()
            continue
        os.chmod(path, 0o700)
        names = os.listdir(path)
        if names:
            stack += [os.path.join(path, name) for name in names]
        else:
            os.rmdir(path)
            stack.pop()


# --- in the child ------------------------------------------------------------------------------


def child(job, config, rundir, stdin, out_w, err_w):
    worker = os.getppid()
    os.setsid()
    os.dup2(stdin, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    for fd in [int(name) for name in os.listdir("/proc/self/fd")]:
        if fd > 2:  # the control pipes, the other pipes' ends, the listing's own fd
            try:
                os.close(fd)
            except OSError:
                pass
    os.chdir(rundir)
    os.environ["HOME"] = os.environ["TMPDIR"] = rundir
    uid = os.getuid() if config["uid"] is None else config["uid"]
    cpu = math.ceil(job["timeout_s"]) + 1
    memory = job["memory_mb"] << 20
    limits = {
        resource.RLIMIT_CPU: (cpu, cpu + 1),  # SIGXCPU, then SIGKILL: a backstop behind the wall clock
        resource.RLIMIT_AS: (memory, memory),
        resource.RLIMIT_NPROC: (processes_of(uid) + config["max_procs"],) * 2,  # counts threads too
        resource.RLIMIT_NOFILE: (config["max_open_files"],) * 2,
        resource.RLIMIT_FSIZE: (config["max_file_mb"] << 20,) * 2,
        resource.RLIMIT_CORE: (0, 0),
    }
    for which, (soft, hard) in limits.items():
        resource.setrlimit(which, (soft, hard))
    if config["uid"] is not None:
        os.setgroups([])
        os.setgid(config["gid"])
        os.setuid(config["uid"])
    prctl(PR_SET_NO_NEW_PRIVS, 1)  # setuid binaries gain nothing
    prctl(PR_SET_DUMPABLE, 1)  # the program's own /proc/self stays its own
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != worker:  # the worker died before PDEATHSIG was armed
        os._exit(SETUP_FAILED)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os._exit(execute(job["code"]))


def processes_of(uid):
    """How many processes ``uid`` has now (RLIMIT_NPROC counts them all, not just ours)."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                count += os.stat("/proc/" + entry).st_uid == uid
            except OSError:
                pass
    return count


def execute(source):
    """Run ``source`` as ``python -c`` would and return the exit status."""
    import atexit
    import builtins

    main = type(sys)("__main__")
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    sys.argv[:] = ["-c"]
    try:
        exec(compile(source, "<string>", "exec"), main.__dict__)
        status = 0
    except SystemExit as exc:
        status = exit_status(exc.code)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        status = 1
    threading = sys.modules.get("threading")
    if threading is not None:
        threading._shutdown()  # wait for non-daemon threads, as interpreter shutdown does
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        status = status or 120  # what python exits with when flushing fails
    return status


def exit_status(code):
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    main()
