"""Medians over repetitions, ratios per repetition, the targets, the Markdown table."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from bench._stats import summary

EVENT_METRICS = (
    "end_to_end_per_s",
    "publish_per_s",
    "latency_p50_ms",
    "latency_p99_ms",
    "missing",
    "duplicates",
)
TOKEN_METRICS = ("ok_per_s", "latency_p50_ms", "latency_p99_ms", "non_2xx")

AB_SINGLE, AB_BATCH = "authbus (single publish)", "authbus (batch publish)"
DOT_PLAIN_CC = "DOT (plain secrets): client credentials"
DOT_PLAIN_IN = "DOT (plain secrets): introspection"


def _by_rep(runs: list[dict[str, Any]], key: str) -> dict[int, dict[str, dict[str, Any]]]:
    out: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    for run in runs:
        out[run["rep"]][run[key]] = run
    return out


def _get(d: dict[str, Any] | None, *path: str) -> float | None:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d  # type: ignore[return-value]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def target_values(rep: dict[str, Any]) -> dict[str, float | None]:
    """Each target's measured value within one repetition (ratios of figures measured together)."""
    ev, tok, mic = rep["events"], rep["tokens"], rep["micro"]
    batch = _get(ev.get(AB_BATCH), "flood", "end_to_end_per_s")
    return {
        "batch e2e / Dramatiq e2e": _ratio(
            batch, _get(ev.get("dramatiq"), "flood", "end_to_end_per_s")
        ),
        "batch e2e / pipelined ceiling": _ratio(
            batch, _get(ev.get("pipelined ceiling"), "flood", "end_to_end_per_s")
        ),
        "single publish rate / Dramatiq enqueue rate": _ratio(
            _get(ev.get(AB_SINGLE), "flood", "publish_per_s"),
            _get(ev.get("dramatiq"), "flood", "publish_per_s"),
        ),
        "latency at 50 ev/s p50 (ms)": _get(ev.get(AB_SINGLE), "steady", "latency_p50_ms"),
        "latency at 50 ev/s p99 (ms)": _get(ev.get(AB_SINGLE), "steady", "latency_p99_ms"),
        "client-credentials tokens/s / DOT plaintext": _ratio(
            _get(tok.get("authbus: client credentials"), "ok_per_s"),
            _get(tok.get(DOT_PLAIN_CC), "ok_per_s"),
        ),
        "introspection/s / DOT": _ratio(
            _get(tok.get("authbus: introspection"), "ok_per_s"),
            _get(tok.get(DOT_PLAIN_IN), "ok_per_s"),
        ),
        "JWT verifications/s (1 core)": _get(mic, "jwt", "verifications_per_s"),
        "logins / argon2 bound": _get(mic, "logins", "share_of_bound"),
    }


GOALS: dict[str, tuple[str, float]] = {
    "batch e2e / Dramatiq e2e": (">=", 3.0),
    "batch e2e / pipelined ceiling": (">=", 0.5),
    "single publish rate / Dramatiq enqueue rate": (">=", 1.0),
    "latency at 50 ev/s p50 (ms)": ("<=", 2.0),
    "latency at 50 ev/s p99 (ms)": ("<=", 10.0),
    "client-credentials tokens/s / DOT plaintext": (">=", 5.0),
    "introspection/s / DOT": (">=", 5.0),
    "JWT verifications/s (1 core)": (">=", 10_000.0),
    "logins / argon2 bound": (">=", 0.8),
}


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    ev_reps = _by_rep(result["event_runs"], "system")
    tok_reps = _by_rep(result["token_runs"], "name")
    mic_reps = {m["rep"]: m for m in result["micro_runs"]}
    events: dict[str, Any] = {}
    for system in dict.fromkeys(r["system"] for r in result["event_runs"]):
        runs = [r for r in result["event_runs"] if r["system"] == system and "flood" in r]
        failed = sum(1 for r in result["event_runs"] if r["system"] == system and "error" in r)
        if not runs:
            events[system] = {"events": None, "failed": failed}
            continue
        events[system] = {"events": runs[0]["flood"]["events"], "failed": failed}
        for phase in ("flood", "steady"):
            if all(phase in r for r in runs):
                events[system][phase] = {
                    m: summary([r[phase].get(m) for r in runs]) for m in EVENT_METRICS
                }
    toks: dict[str, Any] = {}
    for name in dict.fromkeys(r["name"] for r in result["token_runs"]):
        runs = [r for r in result["token_runs"] if r["name"] == name and "error" not in r]
        toks[name] = {m: summary([r.get(m) for r in runs]) for m in TOKEN_METRICS}
        toks[name]["failed"] = sum(1 for r in result["token_runs"] if r["name"] == name) - len(runs)
        toks[name]["inactive"] = sum(1 for r in runs if r.get("token_still_active") is False)
    micro: dict[str, Any] = {}
    if result["micro_runs"]:
        m = result["micro_runs"]
        micro = {
            "jwt_per_s": summary([_get(x, "jwt", "verifications_per_s") for x in m]),
            "argon2_hash_ms": summary([_get(x, "argon2", "hash_ms") for x in m]),
            "argon2_bound_per_s": summary([_get(x, "argon2", "bound_per_s") for x in m]),
            "logins_per_s": summary([_get(x, "logins", "logins_per_s") for x in m]),
            "logins_share_of_bound": summary([_get(x, "logins", "share_of_bound") for x in m]),
            "failed": sum(1 for x in m for part in x.values() if _get(part, "error")),
        }
    reps = sorted(set(ev_reps) | set(tok_reps) | set(mic_reps))
    per_rep = [
        target_values(
            {
                "events": ev_reps.get(i, {}),
                "tokens": tok_reps.get(i, {}),
                "micro": mic_reps.get(i, {}),
            }
        )
        for i in reps
    ]
    targets = {}
    for name, (op, goal) in GOALS.items():
        s = summary([r[name] for r in per_rep])
        med = s["median"]
        met = None if med is None else (med >= goal if op == ">=" else med <= goal)
        targets[name] = {**s, "goal": f"{op} {goal:g}", "met": met}
    return {"events": events, "tokens": toks, "micro": micro, "targets": targets}


def _fmt(s: dict[str, Any] | None, digits: int = 0) -> str:
    if not s or s.get("median") is None:
        return "-"
    f = f"{{:,.{digits}f}}"
    if s["n"] > 1:
        return f"{f.format(s['median'])} ({f.format(s['min'])}-{f.format(s['max'])})"
    return f.format(s["median"])


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _label(name: str, s: dict[str, Any]) -> str:
    """The row's name, with how many repetitions failed (their error is in the JSON)."""
    if s.get("failed"):
        name += f" ({s['failed']} run(s) failed)"
    if s.get("inactive"):
        name += f" (token inactive after {s['inactive']} run(s))"
    return name


def markdown(result: dict[str, Any]) -> str:
    s, meta = result["summary"], result["meta"]
    reps = meta["config"]["reps"]
    lines = [
        f"## authbus benchmark {meta['timestamp']}" + (" (quick)" if meta["quick"] else ""),
        "",
        f"{meta['cpus']} CPUs, Python {meta['python']}, load average at start "
        f"{meta['loadavg_start'][0]:.1f}; median of {reps} interleaved repetition(s), "
        "(min-max) when more than one. Run time "
        f"{meta.get('seconds', 0):.0f} s.",
        "",
    ]
    if s["events"]:
        lines += [
            "### Event delivery (2 subscriber processes, ~200 B events, no-op handler)",
            "",
            "| system | events | end to end ev/s | publish ev/s | flood p50 ms | flood p99 ms "
            "| 50 ev/s p50 ms | 50 ev/s p99 ms | missing | dup |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for name, e in s["events"].items():
            f, st = e.get("flood", {}), e.get("steady", {})
            lines.append(
                f"| {_label(name, e)} | {_count(e['events'])} | {_fmt(f.get('end_to_end_per_s'))} "
                f"| {_fmt(f.get('publish_per_s'))} | {_fmt(f.get('latency_p50_ms'), 1)} "
                f"| {_fmt(f.get('latency_p99_ms'), 1)} | {_fmt(st.get('latency_p50_ms'), 1)} "
                f"| {_fmt(st.get('latency_p99_ms'), 1)} | {_fmt(f.get('missing'))} "
                f"| {_fmt(f.get('duplicates'))} |"
            )
        lines.append("")
    if s["tokens"]:
        lines += [
            f"### Tokens (wrk, 32 connections, {meta['config']['wrk_seconds']} s per run)",
            "",
            "| run | 2xx responses/s | p50 ms | p99 ms | non-2xx |",
            "|---|--:|--:|--:|--:|",
        ]
        for name, t in s["tokens"].items():
            lines.append(
                f"| {_label(name, t)} | {_fmt(t['ok_per_s'])} | {_fmt(t['latency_p50_ms'], 1)} "
                f"| {_fmt(t['latency_p99_ms'], 1)} | {_fmt(t['non_2xx'])} |"
            )
        lines.append("")
    if s["micro"]:
        m = s["micro"]
        lines += [
            "| in-process | value |",
            "|---|--:|",
            f"| JWT verifications/s, `TokenValidator`, 1 core | {_fmt(m['jwt_per_s'])} |",
            f"| argon2 hash time (configured cost), ms | {_fmt(m['argon2_hash_ms'], 1)} |",
            f"| argon2 bound: cores / hash time, logins/s | {_fmt(m['argon2_bound_per_s'], 1)} |",
            f"| logins/s through the login form | {_fmt(m['logins_per_s'], 1)} |",
            "",
        ]
        if m.get("failed"):
            lines += [f"{m['failed']} in-process measurement(s) failed; see the JSON.", ""]
    lines += [
        "### Targets (ratios within each repetition, then the median)",
        "",
        "| target | measured | goal | met |",
        "|---|--:|--:|:-:|",
    ]
    for name, t in s["targets"].items():
        digits = 0 if "JWT" in name else 2
        met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
        lines.append(f"| {name} | {_fmt(t, digits)} | {t['goal']} | {met} |")
    lines.append("")
    return "\n".join(lines)
