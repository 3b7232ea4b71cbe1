"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

The compose file must validate against the Compose specification's JSON schema, and everything
it references must exist: interpolated variables in `.env.example`, AUTHBUS_ variables in the
settings, bind-mounted files in the repository, commands in the `authbus` CLI.
"""

from __future__ import annotations

import copy
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer
import yaml
from pydantic import BaseModel

from authbus.cli import cli
from authbus.core.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
# Read by the image itself (Dockerfile HEALTHCHECK), not by the settings.
IMAGE_VARIABLES = {"AUTHBUS_SERVICE_PORT"}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?+][^}]*)?\}")


def load_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def compose_schema() -> dict[str, Any]:
    text = (
        resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    ).read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def env_example_names() -> set[str]:
    names = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.add(line.split("=", 1)[0])
    return names


def settings_variables() -> set[str]:
    """Every AUTHBUS_ variable the settings read (nested models joined with `__`)."""

    def walk(model: type[BaseModel], prefix: str) -> set[str]:
        out = set()
        for name, field in model.model_fields.items():
            var = f"{prefix}{name.upper()}"
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                out |= walk(ann, var + "__")
            else:
                out.add(var)
        return out

    return walk(Settings, "AUTHBUS_")


def cli_usage_error(group: Any, argv: list[str]) -> str | None:
    """Parse `authbus ARGV` the way the CLI would, without running it; the error, if any."""
    if not argv:
        return "no command"
    command = group.commands.get(argv[0])
    if command is None:
        return f"no such command {argv[0]!r}"
    try:
        command.make_context(argv[0], list(argv[1:]))
    except Exception as exc:  # the CLI's own usage errors (typer vendors click)
        format_message = getattr(exc, "format_message", None)
        return str(format_message() if format_message else exc)
    return None


def authbus_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if svc.get("image", "").startswith("authbus") or "build" in svc
    }


def problems(compose: dict[str, Any], raw_text: str) -> list[str]:
    """Everything wrong with a compose file; empty when it is sound."""
    found: list[str] = []
    validator = jsonschema.Draft7Validator(compose_schema())
    for error in validator.iter_errors(compose):
        found.append(f"schema: {'/'.join(map(str, error.path))}: {error.message}")

    defined = env_example_names()
    for var in sorted(set(INTERPOLATION.findall(raw_text))):
        if var not in defined:
            found.append(f"${{{var}}} is not defined in .env.example")

    known = settings_variables() | IMAGE_VARIABLES
    group = typer.main.get_command(cli)
    for name, svc in compose["services"].items():
        for key in svc.get("environment", {}) or {}:
            if key.startswith("AUTHBUS_") and key not in known:
                found.append(f"{name}: {key} is not a setting")
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else ""
            if source.startswith(".") and not (ROOT / source).exists():
                found.append(f"{name}: mounted file {source} does not exist")
        if name in authbus_services(compose):
            argv = list(svc.get("command") or [])
            message = cli_usage_error(group, argv)
            if message:
                found.append(f"{name}: `authbus {' '.join(argv)}`: {message}")
        for dep in svc.get("depends_on", {}) or {}:
            if dep not in compose["services"]:
                found.append(f"{name}: depends on unknown service {dep}")
    if "build" in json.dumps(compose) and not DOCKERFILE.exists():
        found.append("build: no Dockerfile")
    return found


def test_compose_file_is_valid_and_every_reference_exists() -> None:
    assert problems(load_compose(), COMPOSE.read_text()) == []


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda c: c["services"]["user"].update(command=["serve", "usr"]), "`authbus serve usr`"),
        (lambda c: c["services"]["token"].update(command=["srve", "token"]), "no such command"),
        (
            lambda c: c["services"]["event"]["environment"].update(AUTHBUS_EVENT__PROT="1"),
            "AUTHBUS_EVENT__PROT is not a setting",
        ),
        (
            lambda c: c["services"]["postgres"]["volumes"].append("./deploy/missing.sh:/x"),
            "mounted file ./deploy/missing.sh does not exist",
        ),
        (lambda c: c["services"]["user"].update(restart=7), "schema: services/user/restart"),
        (
            lambda c: c["services"]["user"].update(depends_on={"nosuch": {}}),
            "depends on unknown service nosuch",
        ),
    ],
)
def test_checker_catches_a_broken_reference(breakage: Any, expected: str) -> None:
    compose = copy.deepcopy(load_compose())
    # Merged anchors share dicts; give the broken service its own copy first.
    for svc in compose["services"].values():
        if "environment" in svc:
            svc["environment"] = dict(svc["environment"])
    breakage(compose)
    assert any(expected in p for p in problems(compose, COMPOSE.read_text())), problems(
        compose, COMPOSE.read_text()
    )


def test_an_undefined_interpolation_is_caught() -> None:
    text = COMPOSE.read_text() + "\n# ${AUTHBUS_NOT_IN_ENV_EXAMPLE}\n"
    assert "${AUTHBUS_NOT_IN_ENV_EXAMPLE} is not defined in .env.example" in problems(
        load_compose(), text
    )


def test_the_shape_the_issue_asks_for() -> None:
    compose = load_compose()
    services = compose["services"]
    assert services["token"]["deploy"]["replicas"] == 2
    assert "--appendonly" in services["redis"]["command"]
    for name in ("user", "token", "event"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("postgres", "redis", "gateway"):
        assert "healthcheck" in services[name]
    assert set(compose["volumes"]) >= {"postgres-data", "redis-data"}


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*", text, re.M) and "/healthz" in text
    assert 'ENTRYPOINT ["authbus"]' in text
    assert '".[server]"' in text and "--group" not in text


def test_no_secret_is_committed() -> None:
    for line in ENV_EXAMPLE.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            name, value = line.split("=", 1)
            if "SECRET" in name or "PASSWORD" in name or "KEY" in name:
                assert value.startswith("change-me"), f"{name} has a real-looking value"
    assert not (ROOT / ".env").exists() or ".env" in (ROOT / ".gitignore").read_text()
