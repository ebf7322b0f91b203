"""A stand-in trainer process for the ``watch`` tests: it writes checkpoint files into its output folder a
chunk at a time, one chunk per ``next`` line on stdin (answering ``wrote <path> <bytes so far>/<size>``),
so a test can look at the folder between any two writes, half-written files included. Commands::

    next          the next chunk of the current file (a new file starts with an empty one)
    rotate PATH   delete PATH (a trainer's "keep the last N")
    quit

argv: the output folder, then ``SOURCE=TARGET`` pairs (TARGET relative to the folder; a TARGET inside a
subfolder, such as ``checkpoint-4/pytorch_lora_weights.safetensors``, creates it), then ``--chunks N``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    folder = Path(argv[0])
    chunks = int(argv[argv.index("--chunks") + 1]) if "--chunks" in argv else 4
    plan = [pair.split("=", 1) for pair in argv[1:] if "=" in pair]
    writes = []
    for source, target in plan:
        data = Path(source).read_bytes()
        size = -(-len(data) // chunks)
        writes += [(folder / target, data[i : i + size], len(data)) for i in range(0, len(data), size)]
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        if command[0] == "rotate":
            path = Path(command[1])
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            print(f"rotated {path}", flush=True)
            continue
        if not writes:
            print("done", flush=True)
            continue
        path, chunk, total = writes.pop(0)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as handle:
            handle.write(chunk)
        print(f"wrote {path} {path.stat().st_size}/{total}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
