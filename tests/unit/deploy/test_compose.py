"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

The compose file must validate against the Compose specification's JSON schema, and everything
it references must exist: interpolated variables in `.env.example`, AUTHBUS_ variables in the
settings (ORDERS_ ones in the example's configuration), bind-mounted files in the repository,
commands in the `authbus` CLI, the example's module and the one-shot scripts' options.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import ipaddress
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer
import yaml
from examples.orders_service.config import VARIABLES as ORDERS_VARIABLES
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
    """The services running an image built from this repository."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if svc.get("image", "").startswith("authbus") or "build" in svc
    }


def mounted_path(svc: dict[str, Any], container_path: str) -> Path | None:
    """The repository file bind-mounted at `container_path` in `svc`, if any."""
    for volume in svc.get("volumes", []):
        if isinstance(volume, str) and volume.startswith("."):
            source, target = volume.split(":")[:2]
            if target == container_path:
                return ROOT / source
    return None


def script_usage_error(path: Path, args: list[str]) -> str | None:
    """Parse ARGS with the script's own `parser()` (scripts under deploy/ define one)."""
    spec = importlib.util.spec_from_file_location(f"_compose_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parser: argparse.ArgumentParser = module.parser()
    parser.exit_on_error = False
    try:
        parser.parse_args(args)
    except (argparse.ArgumentError, SystemExit) as exc:
        return f"bad arguments ({exc})"
    return None


def command_problem(group: Any, svc: dict[str, Any]) -> str | None:
    """What is wrong with the command line a repository image runs, if anything."""
    argv = [*(svc.get("entrypoint") or []), *(svc.get("command") or [])]
    if not svc.get("entrypoint") and argv[:1] != ["python"]:
        return cli_usage_error(group, argv)  # the authbus image: `authbus ARGV`
    if argv[:2] == ["python", "-m"] and len(argv) > 2:
        module = argv[2]
        if importlib.util.find_spec(module) is None:
            return f"no module {module}"
        return None
    if argv[:1] == ["python"] and len(argv) > 1:
        script = mounted_path(svc, argv[1])
        if script is None or not script.exists():
            return f"{argv[1]} is not a file mounted from the repository"
        return script_usage_error(script, argv[2:])
    return "not a command this repository provides"


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
            if key.startswith("ORDERS_") and key not in ORDERS_VARIABLES:
                found.append(f"{name}: {key} is not read by the orders example")
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else ""
            if source.startswith(".") and not (ROOT / source).exists():
                found.append(f"{name}: mounted file {source} does not exist")
        if name in authbus_services(compose):
            message = command_problem(group, svc)
            if message:
                argv = [*(svc.get("entrypoint") or ["authbus"]), *(svc.get("command") or [])]
                found.append(f"{name}: `{' '.join(argv)}`: {message}")
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
            lambda c: c["services"]["orders"].update(command=["python", "-m", "examples.nope"]),
            "no module examples.nope",
        ),
        (
            lambda c: c["services"]["orders"]["environment"].update(ORDERS_PROT="1"),
            "ORDERS_PROT is not read by the orders example",
        ),
        (
            lambda c: c["services"]["orders-client"]["command"].append("--scopes=x"),
            "orders-client: `python /opt/deploy/ensure_client.py",
        ),
        (
            lambda c: c["services"]["orders-client"].update(volumes=[]),
            "is not a file mounted from the repository",
        ),
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
    for name in ("postgres", "redis", "gateway", "orders"):
        assert "healthcheck" in services[name]
    # The example service starts once its client exists and what it calls is healthy.
    orders = services["orders"]
    assert orders["depends_on"]["orders-client"]["condition"] == "service_completed_successfully"
    for name in ("redis", "token", "event"):
        assert orders["depends_on"][name]["condition"] == "service_healthy"
    assert orders["build"]["target"] == "orders-example"
    assert orders["environment"]["ORDERS_CLIENT_SECRET"].startswith("${ORDERS_CLIENT_SECRET")
    assert set(compose["volumes"]) >= {"postgres-data", "redis-data"}


def env_example_values() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, value = line.split("=", 1)
            values[name] = value
    return values


def interpolated(value: str) -> str:
    """`value` as compose reads it with .env.example as the .env file."""
    values = env_example_values()

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in values:
            return values[name]
        default = re.match(r"\$\{[A-Za-z0-9_]+:-([^}]*)\}", match.group(0))
        assert default, f"${{{name}}} has no value"
        return default.group(1)

    return INTERPOLATION.sub(one, value)


def test_services_believe_forwarded_headers_from_the_gateway_only() -> None:
    compose = load_compose()
    services = compose["services"]
    gateway = interpolated(services["gateway"]["networks"]["default"]["ipv4_address"])
    subnet = interpolated(compose["networks"]["default"]["ipam"]["config"][0]["subnet"])
    assert ipaddress.ip_address(gateway) in ipaddress.ip_network(subnet)
    for name in ("user", "token", "event"):
        trusted = interpolated(services[name]["environment"]["AUTHBUS_FORWARDED_ALLOW_IPS"])
        assert trusted == gateway, name
        assert Settings(forwarded_allow_ips=trusted).forwarded_allow_ips == gateway
    # The gateway sets what the services then believe.
    nginx = (ROOT / "deploy" / "gateway" / "nginx.conf").read_text()
    assert "X-Forwarded-For   $proxy_add_x_forwarded_for" in nginx


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*", text, re.M) and "/healthz" in text
    assert 'ENTRYPOINT ["authbus"]' in text
    # The last stage is the default target: the services, not the example.
    assert re.findall(r"^FROM \S+ AS (\S+)", text, re.M)[-1] == "authbus"
    assert "AS orders-example" in text
    assert '".[server]"' in text and "--group" not in text


def test_no_secret_is_committed() -> None:
    for line in ENV_EXAMPLE.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            name, value = line.split("=", 1)
            if "SECRET" in name or "PASSWORD" in name or "KEY" in name:
                assert value.startswith("change-me"), f"{name} has a real-looking value"
    assert not (ROOT / ".env").exists() or ".env" in (ROOT / ".gitignore").read_text()
