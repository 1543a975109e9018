"""Summarize a `py-spy record --format raw` file (collapsed stacks): top self and inclusive frames.

.venv/bin/python benchmarks/overhead/profile_top.py benchmarks/overhead/profiles/X.txt [-n 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

LINE = re.compile(r"^(.*) (\d+)$")


def frame_name(frame: str) -> str:
    """`func (path/file.py:123)` -> `func (path/file.py)`: merge lines of one function."""
    return re.sub(r":\d+\)$", ")", frame.strip())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("file", type=Path)
    p.add_argument("-n", type=int, default=25)
    p.add_argument("--lines", action="store_true", help="keep line numbers in self time")
    args = p.parse_args()
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for raw in args.file.read_text().splitlines():
        m = LINE.match(raw)
        if not m:
            continue
        stack, n = m.group(1).split(";"), int(m.group(2))
        total += n
        leaf = stack[-1].strip() if args.lines else frame_name(stack[-1])
        own[leaf] += n
        for f in {frame_name(f) for f in stack}:
            incl[f] += n
    print(f"{total} samples\n\nself time:")
    for f, n in own.most_common(args.n):
        print(f"{100 * n / total:6.1f}%  {f}")
    print("\ninclusive time:")
    for f, n in incl.most_common(args.n + 15):
        print(f"{100 * n / total:6.1f}%  {f}")


if __name__ == "__main__":
    main()
