"""Small statistics helpers (no numpy in the project venv)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile, q in [0, 100]."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float | None]) -> dict[str, float | None]:
    """Median, min and max over repetitions (None values are skipped)."""
    real = [v for v in values if v is not None]
    if not real:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(real), "min": min(real), "max": max(real), "n": len(real)}
