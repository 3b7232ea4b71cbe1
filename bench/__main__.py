"""`python -m bench` (`make bench`): every benchmark, interleaved repetitions.

    python -m bench            # full run: 3 repetitions (under 20 minutes on 2 cores)
    python -m bench --quick    # small counts, 1 repetition (development)
    python -m bench --profile  # also py-spy profiles of the authbus hot paths

Writes bench/results/<timestamp>.json, .md and .png and prints the table.
Everything binds to 127.0.0.1; every process started is stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import _venvs, events, report, tokens
from bench._authbus import start_stack
from bench._proc import Procs, start_redis

RESULTS = Path(__file__).resolve().parent / "results"

FULL = {
    "reps": 3,
    "events": 20_000,
    # Paths too slow for 20,000 events x 3 repetitions inside the 20-minute budget on 2
    # cores: same workload, fewer events (the rate is steady after the first second).
    "events_override": {"authbus (single publish)": 5_000, "rq": 3_000},
    "steady": 300,  # 6 s at 50 events/s
    "wrk_seconds": 10,
    "jwt_seconds": 5,
    "argon2_seconds": 3,
    "login_seconds": 10,
}
QUICK = {
    "reps": 1,
    "events": 1_000,
    "events_override": {"authbus (single publish)": 500, "rq": 300},
    "steady": 100,
    "wrk_seconds": 3,
    "jwt_seconds": 2,
    "argon2_seconds": 1,
    "login_seconds": 4,
}


def say(line: str) -> None:
    print(line, flush=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small counts, 1 repetition")
    p.add_argument("--reps", type=int, help="repetitions (default 3, or 1 with --quick)")
    p.add_argument("--only", choices=["events", "tokens"], help="run one part")
    p.add_argument("--systems", help="comma-separated substrings of event systems to run")
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the event and token services (bench/results/profile-*)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp work dir (logs)")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    cfg: dict[str, Any] = dict(QUICK if args.quick else FULL)
    if args.reps:
        cfg["reps"] = args.reps
    do_events = args.only in (None, "events")
    do_tokens = args.only in (None, "tokens")
    if do_tokens and tokens.wrk_path() is None:
        say(f"[bench] {tokens.WRK_HELP}")
        return 2
    started = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    say(
        f"[bench] {'quick' if args.quick else 'full'} run, {cfg['reps']} repetition(s); "
        f"preparing venvs under {_venvs.ROOT}"
    )
    _venvs.ensure_all(["tools", "dramatiq", "celery", "rq", "dot"], say)
    work = Path(tempfile.mkdtemp(prefix="authbus-bench-"))
    procs = Procs(work / "logs")
    result: dict[str, Any] = {
        "meta": {
            "timestamp": stamp,
            "quick": args.quick,
            "config": cfg,
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "pins": _venvs.PINS,
            "loadavg_start": os.getloadavg(),
        },
        "event_runs": [],
        "token_runs": [],
        "micro_runs": [],
    }
    try:
        _redis, redis_url = start_redis(procs, work)
        say(f"[bench] redis on {redis_url}; starting authbus (token --workers 2)")
        stack = start_stack(procs, work, redis_url)
        result["meta"]["authbus_workers"] = stack["workers"]
        dot = None
        if do_tokens:
            say("[bench] starting django-oauth-toolkit (gunicorn, 2 workers, SQLite)")
            dot = tokens.start_dot(procs, work)
        systems = events.systems(redis_url, stack) if do_events else []
        if args.systems:
            wanted = [s.strip() for s in args.systems.split(",")]
            systems = [s for s in systems if any(w in s.name for w in wanted)]
        wrk_runs: list[dict[str, Any]] = []
        for rep in range(cfg["reps"]):
            say(f"[bench] repetition {rep + 1}/{cfg['reps']}")
            # Rotate the order so no system always runs first (or right after a heavy one).
            order = systems[rep % max(1, len(systems)) :] + systems[: rep % max(1, len(systems))]
            for system in order:
                n = cfg["events_override"].get(system.name, cfg["events"])
                try:
                    run = events.run_once(system, procs, redis_url, work, n, cfg["steady"], say)
                except Exception as exc:  # one broken system must not sink the whole run
                    run = {"system": system.name, "error": failure(system.name, exc)}
                run["rep"] = rep
                result["event_runs"].append(run)
            # Fresh tokens each repetition: the introspected ones must not expire mid-run.
            wrk_runs = tokens.targets(stack, dot, work) if do_tokens else []
            for target in wrk_runs:
                try:
                    run = tokens.run_wrk(target["url"], target["script"], cfg["wrk_seconds"])
                    run["token_still_active"] = tokens.still_active(target)
                except Exception as exc:
                    run = {"error": failure(target["name"], exc)}
                run.update(name=target["name"], rep=rep)
                if "error" not in run:
                    say(
                        f"  {target['name']:<40} {run['ok_per_s']:>8.0f} ok/s  "
                        f"p50 {run['latency_p50_ms']} ms  p99 {run['latency_p99_ms']} ms  "
                        f"non-2xx {run['non_2xx']}"
                        + ("  TOKEN NO LONGER ACTIVE" if run["token_still_active"] is False else "")
                    )
                result["token_runs"].append(run)
            if do_tokens:
                result["micro_runs"].append({"rep": rep, **measure_micro(stack, cfg)})
        if args.profile:
            result["profiles"] = profile(stack, procs, redis_url, work, cfg, stamp, wrk_runs)
    finally:
        procs.stop_all()
        result["meta"]["loadavg_end"] = os.getloadavg()
        result["meta"]["seconds"] = round(time.monotonic() - started, 1)
        if args.keep:
            say(f"[bench] work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    result["summary"] = report.summarise(result)
    base = RESULTS / stamp
    base.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    table = report.markdown(result)
    base.with_suffix(".md").write_text(table)
    chart = base.with_suffix(".png")
    subprocess.run(
        [
            str(_venvs.python("tools")),
            str(Path(__file__).with_name("_chart.py")),
            str(base.with_suffix(".json")),
            str(chart),
        ],
        check=False,
        timeout=120,
    )
    print(table)
    say(
        f"[bench] wrote {base}.json, .md{', .png' if chart.exists() else ''} "
        f"in {result['meta']['seconds']:.0f} s"
    )
    return 0


def failure(what: str, exc: BaseException) -> str:
    """Report a part that failed; the run goes on and the table shows a dash for it."""
    text = f"{type(exc).__name__}: {exc}"[-1500:]
    say(f"  {what}: FAILED ({text.splitlines()[-1] if text.strip() else type(exc).__name__})")
    return text


def measure_micro(stack: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """JWT verification, the argon2 bound and logins; a part that fails is recorded as such."""
    out: dict[str, Any] = {}
    for part in ("jwt", "argon2", "logins"):
        try:
            out[part] = _micro_part(part, stack, cfg)
        except Exception as exc:
            out[part] = {"error": failure(f"micro {part}", exc)}
    if "logins_per_s" in out["logins"] and "bound_per_s" in out["argon2"]:
        out["logins"]["share_of_bound"] = (
            out["logins"]["logins_per_s"] / out["argon2"]["bound_per_s"]
        )
        say(
            f"  JWT verification (1 core)                "
            f"{out['jwt'].get('verifications_per_s', 0):>8.0f} /s"
        )
        say(
            f"  argon2 hash {out['argon2']['hash_ms']:.1f} ms -> bound "
            f"{out['argon2']['bound_per_s']:.1f}/s; logins {out['logins']['logins_per_s']:.1f}/s "
            f"({100 * out['logins']['share_of_bound']:.0f} % of bound)"
        )
    return out


def _micro_part(part: str, stack: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    a = stack["token_url"]
    if part == "jwt":
        tok = tokens.get_token(f"{a}/token", "authbus-admin", stack["secret"], "events:read")
        return tokens.micro(
            [
                "jwt",
                "--issuer",
                a,
                "--jwks",
                f"{a}/.well-known/jwks.json",
                "--token",
                tok,
                "--seconds",
                str(cfg["jwt_seconds"]),
            ],
            pin=True,
        )
    if part == "argon2":
        return tokens.micro(["argon2", "--seconds", str(cfg["argon2_seconds"])], pin=True)
    return tokens.micro(
        [
            "logins",
            "--token-url",
            a,
            "--user-url",
            stack["user_url"],
            "--secret",
            stack["secret"],
            "--seconds",
            str(cfg["login_seconds"]),
        ]
    )


def profile(
    stack: dict[str, Any],
    procs: Procs,
    redis_url: str,
    work: Path,
    cfg: dict[str, Any],
    stamp: str,
    wrk_runs: list[dict[str, Any]],
) -> dict[str, str]:
    """py-spy on every authbus hot path the targets measure; summaries under bench/results/.

    Event service and one `EventSubscriber` during a single-publish and a batch-publish
    flood; the token service under client-credentials and introspection load; the token and
    user services during logins; `TokenValidator` in one process. Samples of idle threads
    are left out (py-spy's default), so percentages are of the time a process was busy.
    """
    from bench import _pyspy

    out: dict[str, str] = {}
    RESULTS.mkdir(exist_ok=True)
    seconds = max(4, cfg["wrk_seconds"] - 2)

    def keep(raw: Path, key: str, label: str) -> None:
        if raw.exists() and raw.stat().st_size:
            path = RESULTS / f"{stamp}-profile-{key}.txt"
            path.write_text(f"# {label}\n" + _pyspy.summarise(raw))
            out[label] = str(path)

    counts = {"authbus (single publish)": 1_000, "authbus (batch publish)": 5_000}
    for system in events.systems(redis_url, stack):
        if system.name not in counts:
            continue
        key = "single" if "single" in system.name else "batch"
        spies: list[tuple[subprocess.Popen[bytes], Path, str, str]] = []

        def attach(
            consumers: list[subprocess.Popen[bytes]],
            key: str = key,
            spies: list[tuple[subprocess.Popen[bytes], Path, str, str]] = spies,
        ) -> None:
            for who, pid in (("event", stack["procs"]["event"].pid), ("sub", consumers[0].pid)):
                raw = work / f"profile-{key}-{who}.txt"
                label = f"{'event service' if who == 'event' else 'EventSubscriber'}, {key} flood"
                spies.append((_pyspy.start(pid, raw, 8), raw, f"{key}-{who}", label))

        events.run_once(system, procs, redis_url, work, counts[system.name], 0, say, attach)
        for spy, raw, name, label in spies:
            spy.wait(120)
            keep(raw, f"event-{name}", label)
    for target in wrk_runs[:2]:  # authbus token issuance and introspection
        key = "token" if "credentials" in target["name"] else "introspect"
        raw = work / f"profile-{key}.txt"
        spy = _pyspy.start(stack["procs"]["token"].pid, raw, seconds)
        tokens.run_wrk(target["url"], target["script"], seconds + 1)
        spy.wait(120)
        keep(raw, key, f"token service, {target['name']}")
    # Logins through the form: the token service and the user service (argon2) together.
    logins = []
    for svc in ("token", "user"):
        raw = work / f"profile-login-{svc}.txt"
        logins.append((_pyspy.start(stack["procs"][svc].pid, raw, 8), raw, svc))
    a = stack["token_url"]
    tokens.micro(
        [
            *("logins", "--token-url", a, "--user-url", stack["user_url"]),
            *("--secret", stack["secret"], "--seconds", "6"),
        ]
    )
    for spy, raw, svc in logins:
        spy.wait(120)
        keep(raw, f"login-{svc}", f"{svc} service during logins")
    # JWT verification in one process, run under py-spy.
    tok = tokens.get_token(f"{a}/token", "authbus-admin", stack["secret"], "events:read")
    raw = work / "profile-jwt.txt"
    pyspy = _venvs.python("tools").parent / "py-spy"
    micro = ["-m", "bench.micro", "jwt", "--issuer", a, "--jwks", f"{a}/.well-known/jwks.json"]
    subprocess.run(
        [
            *(str(pyspy), "record", "--rate", "200", "--format", "raw", "--output", str(raw)),
            *("--", sys.executable, *micro, "--token", tok, "--seconds", "3"),
        ],
        capture_output=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    keep(raw, "jwt", "TokenValidator.validate, one process")
    for name, where in out.items():
        say(f"[bench] profile of {name}: {where}")
    return out


if __name__ == "__main__":
    sys.exit(main())
