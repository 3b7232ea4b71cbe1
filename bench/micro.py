"""In-process measurements, each run in its own process by the bench (one core each):

python -m bench.micro jwt --issuer URL --jwks URL --token T --seconds 5
python -m bench.micro argon2 --seconds 3
python -m bench.micro logins --token-url URL --user-url URL --secret S --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import threading
import time
from typing import Any
from urllib.parse import urljoin

import requests

REDIRECT_URI = "http://127.0.0.1:9/bench-callback"  # never followed


def jwt_rate(issuer: str, jwks: str, token: str, seconds: float) -> dict[str, Any]:
    from authbus.common.security import TokenValidator

    async def main() -> dict[str, Any]:
        validator = TokenValidator(issuer=issuer, audiences=["authbus"], jwks_url=jwks)
        await validator.validate(token)  # fetches and caches the JWKS
        n, t0 = 0, time.perf_counter()
        deadline = t0 + seconds
        while True:
            for _ in range(200):
                await validator.validate(token)
            n += 200
            now = time.perf_counter()
            if now >= deadline:
                break
        await validator.aclose()
        return {"verifications_per_s": n / (now - t0), "n": n}

    return asyncio.run(main())


def argon2_time(seconds: float) -> dict[str, Any]:
    from pwdlib.hashers.argon2 import Argon2Hasher

    from authbus.core.settings import UserSettings

    cfg = UserSettings()
    hasher = Argon2Hasher(
        time_cost=cfg.argon2_time_cost,
        memory_cost=cfg.argon2_memory_kib,
        parallelism=cfg.argon2_parallelism,
    )
    stored = hasher.hash("correct horse battery staple")
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 3:
        hasher.verify("correct horse battery staple", stored)
        n += 1
    per = (time.perf_counter() - t0) / n
    cores = os.cpu_count() or 1
    return {
        "hash_ms": per * 1000,
        "cores": cores,
        "bound_per_s": cores / per,
        "memory_kib": cfg.argon2_memory_kib,
        "time_cost": cfg.argon2_time_cost,
        "parallelism": cfg.argon2_parallelism,
    }


def _admin_session(token_url: str, secret: str) -> requests.Session:
    r = requests.post(
        f"{token_url}/token",
        auth=("authbus-admin", secret),
        timeout=30,
        data={"grant_type": "client_credentials", "scope": "users:admin clients:admin"},
    )
    r.raise_for_status()
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
    return s


def login_rate(
    token_url: str, user_url: str, secret: str, seconds: float, threads: int
) -> dict[str, Any]:
    from authbus.demo import FormParser, pkce_pair

    admin = _admin_session(token_url, secret)
    # One user per thread: the login throttle (per username and address) counts attempts in
    # flight, so parallel logins of ONE user from one address get 429 by design.
    users = [(f"bench{secrets.token_hex(4)}", secrets.token_urlsafe(16)) for _ in range(threads)]
    for username, password in users:
        r = admin.post(
            f"{user_url}/v1/users",
            timeout=30,
            json={"username": username, "password": password, "permissions": ["orders:read"]},
        )
        assert r.status_code == 201, r.text
    client_id = f"bench-web-{secrets.token_hex(3)}"
    r = admin.post(
        f"{token_url}/v1/clients",
        timeout=30,
        json={
            "client_id": client_id,
            "name": "bench web",
            "type": "public",
            "redirect_uris": [REDIRECT_URI],
            "grant_types": ["authorization_code"],
            "scopes": ["orders:read"],
            "first_party": True,
        },
    )
    assert r.status_code == 201, r.text

    failures: dict[str, int] = {}

    def login(username: str, password: str) -> bool:
        browser = requests.Session()  # a fresh browser: no SSO cookie, the form every time
        _verifier, challenge = pkce_pair()
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT_URI,
            "scope": "orders:read",
            "state": "s",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        page = browser.get(f"{token_url}/authorize", params=params, timeout=30)
        form = FormParser()
        form.feed(page.text)
        fields = dict(form.fields)
        fields.update(username=username, password=password)
        answer = browser.post(
            urljoin(page.url, form.action or "/authorize"),
            data=fields,
            allow_redirects=False,
            timeout=30,
        )
        ok = answer.status_code in (302, 303) and "code=" in answer.headers.get("location", "")
        if not ok:
            why = answer.headers.get("location") or answer.text
            failures[f"{answer.status_code} {why[:160]}"] = (
                failures.get(f"{answer.status_code} {why[:160]}", 0) + 1
            )
        return ok

    # A first login must work (three tries: the machine is shared and may stall a moment).
    for attempt in range(3):
        if login(*users[0]):
            break
        if attempt == 2:
            raise SystemExit(f"a login through the form failed: {failures}")
        time.sleep(1)
    failures.clear()
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(username: str, password: str) -> None:
        while time.perf_counter() < deadline:
            ok = login(username, password)
            with lock:
                counts["ok" if ok else "failed"] += 1

    t0 = time.perf_counter()
    pool = [threading.Thread(target=worker, args=u) for u in users]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0
    return {
        "logins_per_s": counts["ok"] / elapsed,
        **counts,
        "threads": threads,
        "failures": dict(sorted(failures.items(), key=lambda kv: -kv[1])[:3]),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["jwt", "argon2", "logins"])
    p.add_argument("--issuer")
    p.add_argument("--jwks")
    p.add_argument("--token")
    p.add_argument("--token-url")
    p.add_argument("--user-url")
    p.add_argument("--secret")
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--threads", type=int, default=8)
    a = p.parse_args()
    if a.what == "jwt":
        out = jwt_rate(a.issuer, a.jwks, a.token, a.seconds)
    elif a.what == "argon2":
        out = argon2_time(a.seconds)
    else:
        out = login_rate(a.token_url, a.user_url, a.secret, a.seconds, a.threads)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
