"""py-spy (from the bench's tools venv) attached to a running service, summarised as text."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

from bench import _venvs


def start(pid: int, out: Path, seconds: int) -> subprocess.Popen[bytes]:
    """Sample `pid` and its children (uvicorn workers) for `seconds`; raw collapsed stacks."""
    pyspy = _venvs.python("tools").parent / "py-spy"
    return subprocess.Popen(
        [
            str(pyspy),
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--duration",
            str(seconds),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _package(frame: str) -> str:
    """`func (aiosqlite/core.py:59)` -> `aiosqlite`; `<frozen ...>` frames -> `python`."""
    where = frame.rpartition(" (")[2].rstrip(")")
    if where.startswith("<"):
        return "python"
    head = where.split("/", 1)[0]
    return head.removesuffix(".py") if "/" not in where else head


def summarise(raw: Path, top: int = 25) -> str:
    """Where the busy time went, from py-spy's collapsed stacks: self time by package, the
    authbus functions by inclusive time, then the top functions by self time."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    by_pkg: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        total += n
        if frames:
            own[frames[-1]] += n
            by_pkg[_package(frames[-1])] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return "0 samples\n"

    def pct(c: int) -> str:
        return f"{100 * c / total:5.1f}"

    ours = [(f, c) for f, c in incl.most_common() if "authbus/" in f and "cli.py" not in f]
    lines = [f"{total} samples (busy threads only)", "", "self %  package"]
    lines += [f"{pct(c)}  {p}" for p, c in by_pkg.most_common(15)]
    lines += ["", "inclusive %  authbus function"]
    lines += [f"{pct(c)}  {f}" for f, c in ours[:top]]
    lines += ["", "self %  function"]
    lines += [f"{pct(c)}  {f}" for f, c in own.most_common(top)]
    return "\n".join(lines) + "\n"
