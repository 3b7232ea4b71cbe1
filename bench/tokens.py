"""Token workload: `wrk` against authbus's token service and django-oauth-toolkit.

wrk runs on loopback, 32 connections, 10 s per run; a request counts when it got a 2xx.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx

from bench import _venvs
from bench._proc import HOST, Procs, free_port, wait_http

WRK_HELP = (
    "wrk is missing: install it with `sudo apt-get install -y wrk` (Debian/Ubuntu) "
    "or `brew install wrk` (macOS); the token benchmarks need it."
)
DOT_SECRET = "bench-secret-" + "s" * 40


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def write_script(path: Path, body: str, authorization: str) -> Path:
    path.write_text(
        textwrap.dedent(f"""\
        wrk.method = "POST"
        wrk.body = "{body}"
        wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
        wrk.headers["Authorization"] = "{authorization}"
        """)
    )
    return path


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(
    url: str, script: Path, seconds: int, connections: int = 32, threads: int = 2
) -> dict[str, Any]:
    wrk = wrk_path()
    if wrk is None:
        raise RuntimeError(WRK_HELP)
    assert url.startswith(f"http://{HOST}:"), "wrk only ever targets loopback"
    out = subprocess.run(
        [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    drain(url)
    total = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
    if total is None:
        raise RuntimeError(f"unreadable wrk output:\n{out}")
    n = int(total.group(1))
    dur = float(total.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[total.group(3)]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(bad.group(1)) if bad else 0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    lat = {
        q: _ms(v, u) for q, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    }
    return {
        "requests": n,
        "ok_per_s": (n - non2xx) / dur,
        "non_2xx": non2xx,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "latency_p50_ms": lat.get("50"),
        "latency_p99_ms": lat.get("99"),
    }


def drain(url: str, timeout: float = 120.0) -> None:
    """Wait until the server has worked off what wrk left queued when it stopped.

    A sync server (gunicorn) still serves the requests sitting in its accept queue after wrk
    has closed their connections; with DOT's PBKDF2 that is seconds of work that would
    otherwise be charged to the next run. One GET queued behind them answers when they are
    done (405 on these POST-only endpoints; the status does not matter).
    """
    with contextlib.suppress(httpx.HTTPError), httpx.Client(timeout=timeout) as client:
        client.get(url)


# ------------------------------------------------------------------ django-oauth-toolkit

DOT_SETTINGS = """\
from pathlib import Path
BASE = Path(__file__).resolve().parent.parent
SECRET_KEY = "bench-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "oauth2_provider"]
MIDDLEWARE = []
ROOT_URLCONF = "benchsite.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE / "db.sqlite3",
                         "OPTIONS": {"timeout": 30}}}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
OAUTH2_PROVIDER = {"SCOPES": {"read": "read", "introspection": "introspection"}}
LOGGING = {"version": 1, "disable_existing_loggers": True}
"""
DOT_URLS = """\
from django.urls import include, path
urlpatterns = [path("o/", include("oauth2_provider.urls", namespace="oauth2_provider"))]
"""
DOT_WSGI = """\
import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")
from django.core.wsgi import get_wsgi_application
application = get_wsgi_application()
"""
DOT_SETUP = f"""\
import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from oauth2_provider.models import Application
for client_id, hashed in (("bench-hashed", True), ("bench-plain", False)):
    Application.objects.create(
        name=client_id, client_id=client_id, client_secret={DOT_SECRET!r},
        hash_client_secret=hashed, client_type="confidential",
        authorization_grant_type="client-credentials")
"""


def start_dot(procs: Procs, workdir: Path) -> dict[str, Any]:
    """A minimal Django project with DOT, migrated, served by gunicorn with 2 workers."""
    site = workdir / "dot"
    (site / "benchsite").mkdir(parents=True, exist_ok=True)
    (site / "benchsite" / "__init__.py").write_text("")
    (site / "benchsite" / "settings.py").write_text(DOT_SETTINGS)
    (site / "benchsite" / "urls.py").write_text(DOT_URLS)
    (site / "benchsite" / "wsgi.py").write_text(DOT_WSGI)
    py = str(_venvs.python("dot"))
    subprocess.run([py, "-c", DOT_SETUP], cwd=site, check=True, timeout=300, capture_output=True)
    port = free_port()
    gunicorn = str(Path(py).parent / "gunicorn")
    proc = procs.start(
        "dot-gunicorn",
        [
            gunicorn,
            "benchsite.wsgi",
            "--workers",
            "2",
            "--bind",
            f"{HOST}:{port}",
            "--timeout",
            "120",
        ],
        cwd=site,
    )
    url = f"http://{HOST}:{port}"
    wait_http(f"{url}/o/token/", proc)
    return {"url": url, "proc": proc}


def still_active(target: dict[str, Any]) -> bool | None:
    """After an introspection run: does the server still call the token active? (A run that
    measured `{"active": false}` answers would not be the workload it claims to be.)"""
    check = target.get("check")
    if check is None:
        return None
    r = httpx.post(
        target["url"],
        data={"token": check["token"]},
        headers={"Authorization": check["authorization"]},
        timeout=120,
    )
    return bool(r.status_code == 200 and r.json().get("active") is True)


def get_token(url: str, client_id: str, secret: str, scope: str) -> str:
    r = httpx.post(
        url,
        data={"grant_type": "client_credentials", "scope": scope},
        auth=(client_id, secret),
        timeout=60,
    )
    r.raise_for_status()
    return str(r.json()["access_token"])


def targets(
    authbus: dict[str, Any], dot: dict[str, Any] | None, workdir: Path
) -> list[dict[str, Any]]:
    """(name, url, script) of every wrk run; tokens for introspection fetched once here."""
    runs: list[dict[str, Any]] = []
    a_url, a_secret = authbus["token_url"], authbus["secret"]
    auth = _basic("authbus-admin", a_secret)
    runs.append(
        {
            "name": "authbus: client credentials",
            "url": f"{a_url}/token",
            "script": write_script(
                workdir / "a_token.lua", "grant_type=client_credentials&scope=events:read", auth
            ),
        }
    )
    tok = get_token(f"{a_url}/token", "authbus-admin", a_secret, "events:read")
    runs.append(
        {
            "name": "authbus: introspection",
            "url": f"{a_url}/introspect",
            "script": write_script(workdir / "a_intro.lua", f"token={tok}", auth),
            "check": {"token": tok, "authorization": auth},
        }
    )
    if dot:
        for variant in ("plain", "hashed"):
            cid = f"bench-{variant}"
            auth = _basic(cid, DOT_SECRET)
            runs.append(
                {
                    "name": f"DOT ({variant} secrets): client credentials",
                    "url": f"{dot['url']}/o/token/",
                    "script": write_script(
                        workdir / f"d_{variant}_token.lua",
                        "grant_type=client_credentials&scope=read",
                        auth,
                    ),
                }
            )
            tok = get_token(f"{dot['url']}/o/token/", cid, DOT_SECRET, "read")
            runs.append(
                {
                    "name": f"DOT ({variant} secrets): introspection",
                    "url": f"{dot['url']}/o/introspect/",
                    "script": write_script(
                        workdir / f"d_{variant}_intro.lua", f"token={tok}", auth
                    ),
                    "check": {"token": tok, "authorization": auth},
                }
            )
    return runs


def micro(args: list[str], timeout: float = 300, pin: bool = False) -> dict[str, Any]:
    """Run `python -m bench.micro ...`; `pin`: on one core (taskset) when available."""
    prefix = ["taskset", "-c", "0"] if pin and shutil.which("taskset") else []
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "bench.micro", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.micro {args[0]} failed: {done.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out
