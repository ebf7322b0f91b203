"""Every benchmark in one command: ``python bench/run.py``. Each runs in its own process (memory and
thread settings stay its own); their output is printed in turn, then every target line together.
``--only NAME[,NAME]`` runs some of them (names: step_end, metrics, async, memory, processes, families,
evaluate)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["step_end", "metrics", "async", "memory", "processes", "families", "evaluate"]


def main(argv: list[str]) -> int:
    names = BENCHMARKS
    if "--only" in argv:
        names = argv[argv.index("--only") + 1].split(",")
        unknown = sorted(set(names) - set(BENCHMARKS))
        if unknown:
            print(f"unknown benchmark(s) {unknown}; choose from {BENCHMARKS}", file=sys.stderr)
            return 2
    targets, failed = [], []
    for name in names:
        print(f"== {name} ==", flush=True)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, str(HERE / f"bench_{name}.py")], capture_output=True, text=True
        )
        print(done.stdout, end="")
        if done.returncode:
            failed.append(name)
            print(done.stderr[-3000:])
        targets += [f"{name}: {line}" for line in done.stdout.splitlines() if line.startswith("target:")]
        print(f"({time.perf_counter() - started:.0f} s)\n", flush=True)
    print("== targets ==")
    print("\n".join(targets))
    if failed:
        print(f"failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
