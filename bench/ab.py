"""A/B: the same benchmarks on two commits, side by side in one run, in ABBA order (so a drift
of the machine during the run weighs on both sides alike).

    python bench/ab.py --before 7485a14 [--after HEAD] [--benches rest_crud,bundles,search,mllp_ingest]

Each commit is checked out in a temporary git worktree; its bench scripts and its calipso run
from there (PYTHONPATH points at it, ahead of the editable install). Every line a bench prints
with a ratio in it is kept; the summary puts the two commits' ratios side by side, with the
mean of each side's two runs. Nothing asserts: the figures go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RATIO = re.compile(r"^(?P<label>[^=]*?(?:ratio|calipso/raw|calipso/baseline)[^=]*?)\s*=\s*(?P<value>\d+\.\d+)")
# small enough to repeat four times in one sitting; each bench's own defaults are for its issue
ARGUMENTS = {
    "rest_crud": ["--rounds", "1", "--seconds", "8"],
    "bundles": ["--bundles", "100", "--rounds", "1"],
    "search": ["--entries", "20000", "--small", "5000", "--seconds", "5"],
    "mllp_ingest": ["--messages", "600"],
}


def worktree(revision: str, where: Path) -> Path:
    path = where / revision.replace("/", "_")
    subprocess.run(["git", "worktree", "add", "--detach", "-f", str(path), revision], cwd=ROOT, check=True, capture_output=True)
    return path


def run_bench(checkout: Path, bench: str) -> tuple[list[tuple[str, float]], str]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run([sys.executable, str(checkout / "bench" / f"{bench}.py"), *ARGUMENTS.get(bench, [])],
                          cwd=checkout, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{bench} at {checkout.name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    found = [(m["label"].strip(), float(m["value"])) for line in done.stdout.splitlines() if (m := RATIO.match(line.strip()))]
    return found, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the commit to compare with (A)")
    parser.add_argument("--after", default="HEAD", help="the commit measured (B), default HEAD")
    parser.add_argument("--benches", default="rest_crud,bundles,search,mllp_ingest")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="calipso-ab-") as work:
        checkouts = {"A": worktree(args.before, Path(work)), "B": worktree(args.after, Path(work))}
        try:
            for bench in args.benches.split(","):
                figures: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
                for side in "ABBA":
                    found, output = run_bench(checkouts[side], bench)
                    print(f"## {bench} {side} ({args.before if side == 'A' else args.after})\n{output}", flush=True)
                    for label, value in found:
                        figures[label][side].append(value)
                print(f"# {bench}: A = {args.before}, B = {args.after} (mean of 2 runs each, ABBA)")
                for label, sides in figures.items():
                    a, b = (sum(sides[s]) / len(sides[s]) if sides[s] else float("nan") for s in "AB")
                    print(f"{label:70s} A {a:5.2f}  B {b:5.2f}  B/A {b / a if a else float('nan'):5.2f}   "
                          f"(A runs {', '.join(f'{v:.2f}' for v in sides['A'])}; B runs {', '.join(f'{v:.2f}' for v in sides['B'])})",
                          flush=True)
        finally:
            for path in checkouts.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
