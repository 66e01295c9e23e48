"""Sandboxed trivial programs per second: rolekit.sandbox's warm workers vs a process per program.

Every contender runs the same ``print(1)`` ``--programs`` times a round (and checks each
printed ``1``), interleaved with the others in this process:

* ``run_many``: one ``sandbox.run_many`` call, the warm workers in parallel;
* ``run``: ``sandbox.run`` once per program, one after the other;
* ``subprocess``: ``subprocess.run([python, "-I", "-c", code])`` per program, no sandbox
  at all (the sandbox's own interpreter);
* ``bwrap_subprocess``: one fresh bwrap + ``python -I -c`` per program, with the
  sandbox's own bwrap command line (where bwrap runs).

    python bench/sandbox.py --quick
    python bench/sandbox.py                       # full: 300 programs a round, 5 rounds

value = the slower of run_many and run, in programs/s; goal 50 (DESIGN.md §4b: 2 cores).
"""

from __future__ import annotations

import os
import subprocess

from harness import emit, median, options, ratio, say, setup, side_by_side

CODE = "print(1)"
GOAL = 50.0


def main() -> None:
    parser = options(__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=None, help="programs per contender and round")
    parser.add_argument("--isolation", default="auto", help="auto, bwrap or rlimits (rolekit.sandbox)")
    args = parser.parse_args()
    info = setup(args)
    programs = args.programs or (60 if args.quick else 300)
    repeats = args.repeats or (3 if args.quick else 5)

    from rolekit import sandbox

    where = sandbox.info(args.isolation)
    python = where["python"]
    say(f"sandbox: {where}")
    assert sandbox.run_many([CODE] * sandbox.WORKERS, isolation=args.isolation)[0].ok  # workers warm

    def check(outputs: list[str]) -> float:
        assert outputs == ["1\n"] * programs, outputs[:3]
        return programs

    def warm_many() -> float:
        return check([r.stdout for r in sandbox.run_many([CODE] * programs, isolation=args.isolation)])

    def warm_run() -> float:
        return check([sandbox.run(CODE, isolation=args.isolation).stdout for _ in range(programs)])

    def spawn(argv: list[str], **kwargs) -> str:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, env=dict(sandbox.ENV),
                              **kwargs).stdout

    def cold_python() -> float:
        return check([spawn([python, "-I", "-c", CODE]) for _ in range(programs)])

    contenders = {"run_many": warm_many, "run": warm_run, "subprocess": cold_python}
    if where["isolation"] == "bwrap":
        argv = sandbox._bwrap_argv(where["bwrap"], python, [python, "-I", "-c", CODE])  # the workers' sandbox
        nobody = dict(user=sandbox.NOBODY, group=sandbox.NOBODY, extra_groups=[]) if os.geteuid() == 0 else {}

        def cold_bwrap() -> float:
            return check([spawn(argv, cwd="/tmp", **nobody) for _ in range(programs)])

        contenders["bwrap_subprocess"] = cold_bwrap
    rates = side_by_side(contenders, repeats, log=say)
    rows = {f"{name}_per_s": median(r) for name, r in rates.items()}
    rows["run_many_vs_subprocess"] = ratio(rates["run_many"], rates["subprocess"])
    rows["run_vs_subprocess"] = ratio(rates["run"], rates["subprocess"])
    if "bwrap_subprocess" in rates:
        rows["run_many_vs_bwrap_subprocess"] = ratio(rates["run_many"], rates["bwrap_subprocess"])
        rows["run_vs_bwrap_subprocess"] = ratio(rates["run"], rates["bwrap_subprocess"])
    value = min(rows["run_many_per_s"], rows["run_per_s"])
    emit("sandbox", value, GOAL, "trivial programs/s through the warm workers (min of run_many, run)",
         **rows, programs=programs, repeats=repeats, quick=args.quick, isolation=where["isolation"],
         sandbox_python=f"{python} ({where['version']})", workers=where["workers"], machine=info)


if __name__ == "__main__":
    main()
