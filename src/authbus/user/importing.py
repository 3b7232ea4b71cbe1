"""Reading user import files (CSV or JSON) and checking the password hashes they carry.

Users come over from an older system with their password hashes, which are kept as they
are: bcrypt (`$2a$`, `$2b$`, `$2y$`) or argon2id (`$argon2id$`). The first successful login
re-hashes them with the current argon2id parameters.

    records = read_import_file(Path("users.csv"))
    report = await service.import_users(records, actor="cli")

CSV has a header row; `username` and `password_hash` are required, `email`, `permissions`
and `roles` (space-separated), `disabled` (true/false) optional. JSON is a list of objects
with the same keys (permissions and roles as lists or space-separated strings).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from argon2 import extract_parameters
from argon2.exceptions import InvalidHashError

from authbus.user.errors import InvalidImportFile, InvalidPasswordHash

COLUMNS = ("username", "email", "password_hash", "permissions", "roles", "disabled")
REQUIRED = ("username", "password_hash")

_BCRYPT_RE = re.compile(r"\$2[aby]\$(?P<cost>\d\d)\$[./A-Za-z0-9]{53}")
_ARGON2ID_RE = re.compile(
    r"\$argon2id\$v=19\$m=(?P<m>\d{1,10}),t=(?P<t>\d{1,10}),p=(?P<p>\d{1,3})"
    r"\$[A-Za-z0-9+/]{11,}\$[A-Za-z0-9+/]{16,}"
)
# Every login with the hash (and the dummy check of failed ones) pays its cost until it is
# re-hashed: refuse costs no sane system used rather than let one row exhaust memory.
ARGON2_MAX_MEMORY_KIB = 1024 * 1024
ARGON2_MAX_TIME_COST = 100
ARGON2_MAX_PARALLELISM = 64

_TRUE = frozenset({"true", "yes", "1", "y", "t"})
_FALSE = frozenset({"false", "no", "0", "n", "f", ""})


def check_password_hash(stored: str) -> str:
    """The hash if it is a bcrypt or argon2id hash we verify, else `InvalidPasswordHash`.

    >>> check_password_hash("$2b$12$" + "a" * 53)[:7]
    '$2b$12$'
    """
    if stored.startswith("$2"):
        match = _BCRYPT_RE.fullmatch(stored)
        if match is None:
            raise InvalidPasswordHash(
                "password_hash: not a well-formed bcrypt hash ($2a$/$2b$/$2y$, two-digit cost, "
                "53 characters of salt and digest)"
            )
        if not 4 <= int(match["cost"]) <= 31:
            raise InvalidPasswordHash("password_hash: bcrypt cost must be 04 to 31")
        return stored
    if stored.startswith("$argon2id$"):
        match = _ARGON2ID_RE.fullmatch(stored)
        try:
            if match is None:
                raise InvalidHashError(stored)
            extract_parameters(stored)
        except InvalidHashError:
            raise InvalidPasswordHash(
                "password_hash: not a well-formed argon2id hash "
                "($argon2id$v=19$m=...,t=...,p=...$salt$digest)"
            ) from None
        m, t, p = int(match["m"]), int(match["t"]), int(match["p"])
        if not (
            1 <= p <= ARGON2_MAX_PARALLELISM
            and 8 * p <= m <= ARGON2_MAX_MEMORY_KIB
            and 1 <= t <= ARGON2_MAX_TIME_COST
        ):
            raise InvalidPasswordHash(
                f"password_hash: argon2id parameters out of range (m from 8*p to "
                f"{ARGON2_MAX_MEMORY_KIB} KiB, t 1 to {ARGON2_MAX_TIME_COST}, "
                f"p 1 to {ARGON2_MAX_PARALLELISM})"
            )
        return stored
    kind = stored.split("$")[1] if stored.startswith("$") and stored.count("$") > 1 else None
    what = f"a ${kind}$ hash" if kind else "not a recognised hash"
    raise InvalidPasswordHash(
        f"password_hash: {what}; only bcrypt ($2a$, $2b$, $2y$) and argon2id ($argon2id$) "
        "hashes can be imported"
    )


@dataclass(frozen=True, slots=True)
class ImportRecord:
    """One user to import, as read from the file (checked later by the service).

    `error` is set when the row could not even be read; such a row fails.
    """

    row: int
    username: str
    password_hash: str = ""
    email: str | None = None
    permissions: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    disabled: bool = False
    error: str | None = None


@dataclass(slots=True)
class ImportReport:
    """What an import did: each list holds (row, username, reason)."""

    created: list[tuple[int, str]] = field(default_factory=list)
    skipped: list[tuple[int, str, str]] = field(default_factory=list)
    failed: list[tuple[int, str, str]] = field(default_factory=list)
    # --strict and some row failed: nothing was written.
    aborted: bool = False


def read_import_file(path: Path, fmt: str | None = None) -> list[ImportRecord]:
    """The records of a CSV or JSON file (`fmt`, else by extension); `InvalidImportFile`
    when the file as a whole cannot be read. Rows that cannot be read carry an `error`."""
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in ("csv", "json"):
        raise InvalidImportFile(
            f"{path.name}: cannot tell the format; name the file .csv or .json (or pass it)"
        )
    try:
        text = path.read_text("utf-8-sig")
    except OSError as exc:
        raise InvalidImportFile(f"{path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidImportFile(f"{path.name}: not UTF-8 text") from exc
    return parse_csv(text) if fmt == "csv" else parse_json(text)


def parse_csv(text: str) -> list[ImportRecord]:
    """Records of CSV text with a header row (rows numbered as lines of the file)."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in reader.fieldnames or []]
    if missing := [c for c in REQUIRED if c not in header]:
        raise InvalidImportFile(f"CSV header lacks the column(s): {', '.join(missing)}")
    reader.fieldnames = header
    records = []
    try:
        for raw in reader:
            if None in raw:
                records.append(_unreadable(reader.line_num, raw, "more fields than the header"))
                continue
            records.append(_record(reader.line_num, raw))
    except csv.Error as exc:
        raise InvalidImportFile(f"CSV line {reader.line_num}: {exc}") from exc
    return records


def parse_json(text: str) -> list[ImportRecord]:
    """Records of a JSON list of objects (or `{"users": [...]}`), numbered from 1."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidImportFile(f"JSON: {exc.msg} at line {exc.lineno}") from exc
    if isinstance(data, dict) and isinstance(data.get("users"), list):
        data = data["users"]
    if not isinstance(data, list):
        raise InvalidImportFile('JSON: expected a list of users (or {"users": [...]})')
    records = []
    for n, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            records.append(ImportRecord(row=n, username="", error="not a JSON object"))
            continue
        records.append(_record(n, item))
    return records


def _unreadable(row: int, raw: dict[Any, Any], error: str) -> ImportRecord:
    name = raw.get("username")
    username = name.strip() if isinstance(name, str) else ""
    return ImportRecord(row=row, username=username, error=error)


def _record(row: int, raw: dict[Any, Any]) -> ImportRecord:
    try:
        unknown = sorted(str(k) for k in raw if k not in COLUMNS)
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(unknown)}")
        email = _text(raw.get("email"), "email")
        return ImportRecord(
            row=row,
            username=_text(raw.get("username"), "username"),
            password_hash=_text(raw.get("password_hash"), "password_hash"),
            email=email or None,
            permissions=_names(raw.get("permissions"), "permissions"),
            roles=_names(raw.get("roles"), "roles"),
            disabled=_flag(raw.get("disabled")),
        )
    except ValueError as exc:
        return _unreadable(row, raw, str(exc))


def _text(value: Any, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected text, got {type(value).__name__}")
    return value.strip()


def _names(value: Any, name: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(v.strip() for v in value if v.strip())
    raise ValueError(f"{name}: expected a list of strings or a space-separated string")


def _flag(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"disabled: expected true or false, got {value!r}")
