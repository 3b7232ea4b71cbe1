"""Render the chart of a results JSON (runs in the bench's tools venv, which has matplotlib).

python bench/_chart.py results/<ts>.json results/<ts>.png
"""

from __future__ import annotations

import json
import sys
from typing import Any

import matplotlib  # type: ignore[import-not-found]  # the tools venv

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # type: ignore[import-not-found]


def bars(
    ax: Any,
    names: list[str],
    stats: list[dict[str, Any]],
    title: str,
    log: bool = True,
    unit: str = "",
) -> None:
    med = [s["median"] or 0 for s in stats]
    lo = [max(0, (s["median"] or 0) - (s["min"] or 0)) for s in stats]
    hi = [max(0, (s["max"] or 0) - (s["median"] or 0)) for s in stats]
    ax.barh(names, med, xerr=[lo, hi], color="#4c72b0", capsize=3)
    for i, v in enumerate(med):
        ax.text(v, i, f" {v:,.0f}{unit}", va="center", fontsize=7)
    if log:
        ax.set_xscale("log")
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.invert_yaxis()


def main() -> None:
    with open(sys.argv[1]) as f:
        data = json.load(f)
    s = data["summary"]
    panels = []
    if s["events"]:
        panels.append("events")
        panels.append("latency")
    if s["tokens"]:
        panels.append("tokens")
    if not panels:
        return
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.2 * len(panels)))
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, panel in zip(axes, panels, strict=True):
        if panel == "events":
            names = [n for n in s["events"] if "flood" in s["events"][n]]
            bars(
                ax,
                names,
                [s["events"][n]["flood"]["end_to_end_per_s"] for n in names],
                "event delivery, end to end events/s (flood; median, min-max)",
            )
        elif panel == "latency":
            names = [n for n in s["events"] if "steady" in s["events"][n]]
            p50 = [s["events"][n]["steady"]["latency_p50_ms"]["median"] or 0 for n in names]
            p99 = [s["events"][n]["steady"]["latency_p99_ms"]["median"] or 0 for n in names]
            y = range(len(names))
            ax.barh([i - 0.2 for i in y], p50, height=0.4, label="p50", color="#55a868")
            ax.barh([i + 0.2 for i in y], p99, height=0.4, label="p99", color="#c44e52")
            ax.set_yticks(list(y), names)
            ax.set_xscale("log")
            ax.set_title("publish -> processed latency at 50 events/s, ms", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=7)
            ax.invert_yaxis()
        else:
            names = list(s["tokens"])
            bars(
                ax,
                names,
                [s["tokens"][n]["ok_per_s"] for n in names],
                "token endpoints, 2xx responses/s (wrk, 32 connections)",
            )
    fig.suptitle(f"authbus benchmark {data['meta']['timestamp']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
