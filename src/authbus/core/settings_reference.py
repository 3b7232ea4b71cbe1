"""The configuration reference (`docs/configuration.md`), generated from the settings classes.

    authbus config --reference > docs/configuration.md

A test fails when the committed file differs from what this renders.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from authbus.core.settings import Settings

HEADER = """# Configuration reference

Generated from `src/authbus/core/settings.py` by `authbus config --reference`; do not edit.
Every setting is an environment variable; nested settings join their names with `__`.
`authbus config` prints the effective configuration with secrets masked.
"""


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return ""
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, list | dict):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def _type(field: FieldInfo) -> str:
    ann = field.annotation
    text = getattr(ann, "__name__", None) or str(ann)
    text = text.replace("typing.", "").replace("pydantic.types.", "")
    if "SecretStr" in str(ann):
        text = "secret" + (" (optional)" if "None" in str(ann) else "")
    return text.replace("|", "\\|")


def _rows(model: type[BaseModel], prefix: str) -> tuple[list[str], list[tuple[str, type]]]:
    rows, nested = [], []
    for name, field in model.model_fields.items():
        ann = field.annotation
        var = f"{prefix}{name.upper()}"
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            nested.append((var + "__", ann))
            continue
        description = (field.description or "").replace("\n", " ")
        rows.append(f"| `{var}` | {_type(field)} | {_default(field)} | {description} |")
    return rows, nested


def render() -> str:
    out = [HEADER]
    rows, nested = _rows(Settings, "AUTHBUS_")
    out += ["## Shared", "", "| variable | type | default | meaning |", "|---|---|---|---|"]
    out += rows
    for prefix, model in nested:
        service = prefix.removeprefix("AUTHBUS_").rstrip("_").lower()
        sub_rows, _ = _rows(model, prefix)
        out += ["", f"## {service} service", ""]
        if model.__doc__:
            out += [model.__doc__.strip().splitlines()[0], ""]
        out += ["| variable | type | default | meaning |", "|---|---|---|---|"]
        out += sub_rows
    return "\n".join(out) + "\n"
