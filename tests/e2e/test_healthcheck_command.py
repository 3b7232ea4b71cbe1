"""`authbus healthcheck`, the image's HEALTHCHECK: exit 0 while the service answers, non-zero
with a message saying what failed otherwise; and the Dockerfile invokes it with a command
line the CLI accepts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import typer

from authbus.cli import cli
from tests.conftest import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
AUTHBUS = Path(sys.executable).with_name("authbus")  # the console script, as in the image
START_TIMEOUT_S = 120


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHBUS_")}
    env.update(extra)
    return env


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    env: dict[str, str]
    log: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`authbus serve user --port P` (SQLite under a data directory of its own)."""
    data_dir = tmp_path_factory.mktemp("healthcheck")
    port = free_port()
    env = clean_env(AUTHBUS_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    log = data_dir / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(AUTHBUS), "serve", "user", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"authbus serve exited:\n{log.read_text()[-4000:]}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"not ready:\n{log.read_text()[-4000:]}"
            time.sleep(0.2)
        yield Served(proc, port, env, log)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def healthcheck(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AUTHBUS), "healthcheck", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- the command -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_exits_0_against_a_running_service(served: Served, path: str) -> None:
    env = {**served.env, "AUTHBUS_USER__PORT": str(served.port)}
    result = healthcheck("user", "--path", path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"user at http://127.0.0.1:{served.port}{path}: ok" in result.stdout


def test_finds_the_service_and_port_from_the_serving_process(served: Served) -> None:
    # In the container the service is PID 1; here it is the `authbus serve` child. Its
    # command line names the port; the environment does not.
    result = healthcheck("--path", "/healthz", "--pid", str(served.proc.pid), env=served.env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"user at http://127.0.0.1:{served.port}/healthz: ok" in result.stdout


def test_fails_with_a_clear_message_where_nothing_listens(served: Served) -> None:
    port = free_port()
    env = {**served.env, "AUTHBUS_TOKEN__PORT": str(port)}
    result = healthcheck("token", "--timeout", "5", env=env)
    assert result.returncode != 0
    assert result.stdout == ""
    message = result.stderr.strip()
    assert message.startswith("authbus healthcheck: token at "), message
    assert f"http://127.0.0.1:{port}/healthz" in message
    assert "Traceback" not in result.stderr
    assert "Connect" in message, message  # what went wrong: the connection


def test_fails_when_the_process_is_not_an_authbus_service(served: Served) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        result = healthcheck("--pid", str(sleeper.pid), env=served.env)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert result.returncode != 0
    assert "authbus healthcheck:" in result.stderr and "serve" in result.stderr
    assert "Traceback" not in result.stderr


# -- the Dockerfile ----------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) of every Dockerfile line, continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def authbus_stage() -> list[tuple[str, str]]:
    """The instructions of the stage that builds the services' image (`AS authbus`)."""
    stage: list[tuple[str, str]] = []
    current = None
    for word, rest in dockerfile_instructions():
        if word == "FROM":
            current = rest.split()[-1] if " AS " in rest.upper() else None
            continue
        if current == "authbus":
            stage.append((word, rest))
    assert stage, "no `FROM ... AS authbus` stage in the Dockerfile"
    return stage


def healthcheck_of_image() -> tuple[dict[str, str], list[str]]:
    """The HEALTHCHECK's options (--interval=10s, ...) and its CMD in exec form."""
    (line,) = [rest for word, rest in authbus_stage() if word == "HEALTHCHECK"]
    options_part, sep, command = line.partition(" CMD ")
    assert sep, f"HEALTHCHECK without CMD: {line}"
    options = dict(opt.removeprefix("--").split("=", 1) for opt in options_part.split())
    argv = json.loads(command)  # exec form: no shell between Docker and the command
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return options, argv


def parse_with_the_cli(argv: list[str]) -> dict[str, object]:
    """The parameters `authbus` would run `argv` with; raises the CLI's usage error (an
    unknown command or option, a value it refuses) as `authbus` itself would."""
    assert argv[0] == "authbus", argv  # the console script on the image's PATH
    group = typer.main.get_command(cli)
    commands = group.commands  # type: ignore[attr-defined]
    assert argv[1] in commands, f"`authbus {argv[1]}` is not a command: {sorted(commands)}"
    ctx = commands[argv[1]].make_context(argv[1], list(argv[2:]))
    params: dict[str, object] = ctx.params
    return params


def test_the_image_healthcheck_is_a_command_line_the_cli_accepts() -> None:
    _options, argv = healthcheck_of_image()
    assert argv[1] == "healthcheck", argv
    params = parse_with_the_cli(argv)
    assert params["path"] in ("/healthz", "/readyz")
    # Without SERVICE, the service is read from PID 1's `authbus serve` command line.
    assert params["service"] is None and params["pid"] == 1


def test_a_command_line_the_cli_refuses_is_detected() -> None:
    # The check above would catch a typo in the Dockerfile.
    with pytest.raises(Exception, match=r"(?i)no such option"):
        parse_with_the_cli(["authbus", "healthcheck", "--paht", "/healthz"])
    with pytest.raises(Exception, match="not one of"):
        parse_with_the_cli(["authbus", "healthcheck", "--path", "/health"])


def test_the_image_healthcheck_reports_within_dockers_timeout() -> None:
    options, argv = healthcheck_of_image()
    docker_timeout_s = float(options["timeout"].removesuffix("s"))
    params = parse_with_the_cli(argv)
    # The command's own HTTP timeout ends before Docker kills it, so its message is logged.
    assert isinstance(params["timeout"], float) and params["timeout"] < docker_timeout_s


def test_the_image_healthcheck_passes_against_a_service_serving_as_the_image_does(
    served: Served,
) -> None:
    _options, argv = healthcheck_of_image()
    # Exactly the image's command line; only the process to read is not PID 1 here.
    result = subprocess.run(
        [str(AUTHBUS), *argv[1:], "--pid", str(served.proc.pid)],
        env=served.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
