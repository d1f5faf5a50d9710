"""Run every ``benchmarks/bench_*.py`` and print one markdown report.

python benchmarks/run.py                 # everything
python benchmarks/run.py limiter retry   # only modules whose name contains a word
python benchmarks/run.py --quick         # fewer iterations (a smoke run)
python benchmarks/run.py --write docs/benchmarks.md   # also record the tables there

Each module runs in a fresh interpreter of its own, so no module measures in
a heap another one left behind (the batch runs hold 100 000-row tables; the
limiter's new-key run allocates on every decision).
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MARK = "<!-- results -->"


def _child_path() -> None:
    sys.path.insert(0, str(HERE))


def _run_module(name: str, quick: bool) -> list[Any]:
    """Import ``name`` and run it (in a child process: see the module docstring)."""
    return list(importlib.import_module(name).run(quick))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("only", nargs="*", help="substrings of module names to run")
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--write", type=Path, help=f"replace what follows {MARK} in this file")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE))
    modules = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if args.only:
        modules = [m for m in modules if any(word in m for word in args.only)]
    header = (
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.machine()}, one run (`nox -s bench`).\n"
    )
    out = [header]
    print(header, flush=True)
    missed = 0
    spawn = multiprocessing.get_context("spawn")
    for name in modules:
        with ProcessPoolExecutor(1, mp_context=spawn, initializer=_child_path) as pool:
            sections = pool.submit(_run_module, name, args.quick).result()
        for section in sections:
            text = section.markdown()
            print(text, flush=True)
            out.append(text)
            missed += sum(not t.met for t in section.targets)
    summary = f"Targets missed: {missed}\n"
    print(summary)
    if args.write:
        doc = args.write.read_text() if args.write.exists() else f"# Benchmarks\n\n{MARK}\n"
        head = doc.split(MARK)[0]
        args.write.write_text(head + MARK + "\n\n" + "\n".join(out) + "\n" + summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
