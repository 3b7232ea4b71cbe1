"""The bench's own virtual environments under bench/.venvs/, one per peer, pinned versions.

Nothing here touches the project's environment: peers (Dramatiq, Celery, RQ, Django +
django-oauth-toolkit) and the bench's tools (matplotlib, py-spy, pyinstrument) each get a
venv created by the bench itself the first time, reused afterwards (a stamp holds the pins).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent / ".venvs"

# Django 5.2 LTS: Django 6 needs Python 3.12 and the project runs on 3.11.
PINS: dict[str, list[str]] = {
    "tools": ["matplotlib==3.11.2", "py-spy==0.4.3", "pyinstrument==5.1.3"],
    "dramatiq": ["dramatiq[redis]==2.2.1", "redis==8.1.0"],
    "celery": ["celery[redis]==5.7.0", "redis==8.1.0"],
    "rq": ["rq==2.12.0", "redis==8.1.0"],
    "dot": ["Django==5.2.19", "django-oauth-toolkit==3.4.1", "gunicorn==27.0.1"],
}


def _base_python() -> str:
    return getattr(sys, "_base_executable", None) or sys.executable


def python(name: str) -> Path:
    return ROOT / name / "bin" / "python"


def ensure(name: str, say: Callable[[str], object] = print) -> Path:
    """Create (once) the venv `name` with its pinned packages; return its python."""
    pins = PINS[name]
    venv = ROOT / name
    stamp = venv / ".bench-pins"
    wanted = "\n".join(pins) + "\n"
    if stamp.exists() and stamp.read_text() == wanted and python(name).exists():
        return python(name)
    say(f"[bench] creating venv {venv} with {' '.join(pins)} (once)")
    subprocess.run([_base_python(), "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [
            str(python(name)),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *pins,
        ],
        check=True,
        timeout=900,
    )
    stamp.write_text(wanted)
    return python(name)


def ensure_all(
    names: list[str] | None = None, say: Callable[[str], object] = print
) -> dict[str, Path]:
    return {n: ensure(n, say) for n in (names or list(PINS))}


if __name__ == "__main__":
    ensure_all(sys.argv[1:] or None)
