"""`authbus user ...` against a real, migrated database (SQLite, and Postgres when set)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import bcrypt
import pytest
from typer.testing import CliRunner, Result

from authbus.core.db import create_engine, create_sessionmaker
from authbus.core.migrate import upgrade
from authbus.user.cli import user_app
from authbus.user.domain import AuditEntry, OutboxEvent
from authbus.user.errors import InvalidCredentials, UserDisabled
from authbus.user.passwords import PasswordHasher
from authbus.user.service import UserProfile, UserService
from authbus.user.sql_repository import SqlUserRepository
from authbus.user.throttle import LoginThrottle
from tests.integration.user.conftest import PASSWORD

T = TypeVar("T")
Work = Callable[[UserService, SqlUserRepository], Awaitable[T]]


@pytest.fixture
def db(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The configured user database, migrated; the CLI finds it through the environment."""
    upgrade(database_url, "user")
    monkeypatch.setenv("AUTHBUS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("AUTHBUS_USER__DATABASE_URL", database_url)
    # Cheap argon2 keeps the suite fast (the defaults are OWASP-grade).
    monkeypatch.setenv("AUTHBUS_USER__ARGON2_MEMORY_KIB", "1024")
    monkeypatch.setenv("AUTHBUS_USER__ARGON2_TIME_COST", "1")
    return database_url


def cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(user_app, list(args), input=input)


def with_service(url: str, work: Work[T]) -> T:
    """Run `work` against the database as the user service would."""

    async def main() -> T:
        engine = create_engine(url)
        try:
            repo = SqlUserRepository(create_sessionmaker(engine))
            hasher = PasswordHasher(memory_kib=1024, time_cost=1, parallelism=1)
            throttle = LoginThrottle(free_attempts=100, base_delay_s=1, max_delay_s=1)
            return await work(UserService(repo, hasher, throttle=throttle), repo)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def verify(url: str, username: str, password: str) -> UserProfile:
    return with_service(url, lambda s, _: s.verify_credentials(username, password))


def stored_hash(url: str, username: str) -> str:
    async def work(_: UserService, repo: SqlUserRepository) -> str:
        user = await repo.find_user(username)
        assert user is not None
        return user.password_hash

    return with_service(url, work)


def audit(url: str) -> list[AuditEntry]:
    """The audited changes, newest first (the logins `verify` makes left out)."""
    entries = with_service(url, lambda s, _: s.list_audit(limit=200))
    return [e for e in entries if not e.action.startswith("login.")]


def outbox(url: str) -> list[OutboxEvent]:
    return with_service(url, lambda _, r: r.pending_events(200))


def usernames(url: str) -> list[str]:
    async def work(s: UserService, _: SqlUserRepository) -> list[str]:
        return [p.user.username for p in (await s.list_users(limit=200)).items]

    return with_service(url, work)


def make_role(url: str, name: str, *permissions: str) -> None:
    async def work(s: UserService, _: SqlUserRepository) -> None:
        await s.create_role(name, actor="test", permissions=permissions)

    with_service(url, work)


# -- create -------------------------------------------------------------------------------------


def test_create_writes_the_user_its_audit_line_and_event(db: str) -> None:
    make_role(db, "ops", "servers:reboot")
    result = cli(
        "create", "alice", "--password", PASSWORD, "--email", "alice@example.com",
        "-p", "orders:read", "--permission", "orders:write", "--role", "ops",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "created alice" in result.stdout
    profile = verify(db, "ALICE", PASSWORD)
    assert profile.user.email == "alice@example.com" and profile.user.roles == {"ops"}
    assert profile.effective_permissions == {"orders:read", "orders:write", "servers:reboot"}
    created = [e for e in audit(db) if e.action == "user.created"]
    assert [(e.actor, e.target_id) for e in created] == [("cli", str(profile.user.id))]
    assert any(
        e.type == "user.created" and e.aggregate_id == str(profile.user.id) for e in outbox(db)
    )


def test_create_asks_for_the_password_twice_by_default(db: str) -> None:
    result = cli("create", "alice", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    verify(db, "alice", PASSWORD)


def test_create_reads_the_password_from_stdin(db: str) -> None:
    result = cli("create", "alice", "--password-stdin", input=f"{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    verify(db, "alice", PASSWORD)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--password", "short"], "at least 8 characters"),
        (["--password", "password123"], "commonly used password"),
        (["--password", PASSWORD, "--email", "not-an-email"], "not an email address"),
        (["--password", PASSWORD, "-p", 'bad"scope'], "permission"),
        (["--password", PASSWORD, "--role", "nosuchrole"], "no such role: nosuchrole"),
    ],
)
def test_create_refuses_bad_input_and_writes_nothing(
    db: str, args: list[str], message: str
) -> None:
    result = cli("create", "alice", *args)
    assert result.exit_code == 1
    assert message in result.stderr and result.stderr.startswith("error: ")
    assert usernames(db) == [] and audit(db) == []


def test_create_refuses_an_invalid_username(db: str) -> None:
    result = cli("create", "-alice", "--password", PASSWORD)
    assert result.exit_code != 0
    result = cli("create", "al ice", "--password", PASSWORD)
    assert result.exit_code == 1 and "username" in result.stderr
    assert usernames(db) == []


def test_create_refuses_a_taken_name_in_any_letter_case(db: str) -> None:
    assert cli("create", "alice", "--password", PASSWORD).exit_code == 0
    result = cli("create", "ALICE", "--password", PASSWORD)
    assert result.exit_code == 1 and "taken" in result.stderr
    assert usernames(db) == ["alice"]


def test_create_takes_one_password_source_only(db: str) -> None:
    result = cli("create", "alice", "--password", PASSWORD, "--password-stdin", input="x\n")
    assert result.exit_code == 2 and "only one of" in result.output
    assert usernames(db) == []


def test_prompted_passwords_must_match(db: str) -> None:
    result = cli("create", "alice", input=f"{PASSWORD}\nsomething else\n\n")
    assert result.exit_code != 0
    assert usernames(db) == []


# -- list, disable, enable -----------------------------------------------------------------


def test_list_filters_by_prefix_permission_and_state(db: str) -> None:
    make_role(db, "readers", "orders:read")
    for name, extra in [
        ("alice", ["-p", "orders:read"]),
        ("albert", ["--role", "readers"]),
        ("bob", []),
    ]:
        assert cli("create", name, "--password", PASSWORD, *extra).exit_code == 0
    assert cli("disable", "bob").exit_code == 0

    def names(*args: str) -> list[str]:
        result = cli("list", *args)
        assert result.exit_code == 0, result.output
        return [line.split()[0] for line in result.stdout.splitlines()]

    assert names() == ["albert", "alice", "bob"]
    assert names("--prefix", "AL") == ["albert", "alice"]
    assert names("--permission", "orders:read") == ["albert", "alice"]
    assert names("--disabled") == ["bob"]
    assert names("--enabled", "--prefix", "b") == []
    rows = [json.loads(line) for line in cli("list", "--json").stdout.splitlines()]
    assert rows[0]["username"] == "albert" and rows[0]["effective_permissions"] == ["orders:read"]
    assert rows[2]["disabled"] is True


def test_disable_refuses_logins_until_enabled(db: str) -> None:
    assert cli("create", "alice", "--password", PASSWORD).exit_code == 0
    result = cli("disable", "Alice")
    assert result.exit_code == 0 and result.stdout.strip() == "disabled alice"
    with pytest.raises(UserDisabled):
        verify(db, "alice", PASSWORD)
    assert cli("enable", "alice").exit_code == 0
    verify(db, "alice", PASSWORD)
    actions = [(e.actor, e.action, e.details.get("disabled")) for e in audit(db)]
    assert actions[:2] == [("cli", "user.updated", False), ("cli", "user.updated", True)]
    # What other services hear (the token service revokes on user.disabled).
    events = [(e.type, e.data["username"], e.data["actor"]) for e in outbox(db)]
    assert events == [
        ("user.created", "alice", "cli"),
        ("user.disabled", "alice", "cli"),
        ("user.enabled", "alice", "cli"),
    ]
    # Disabling a disabled user changes nothing and announces nothing.
    assert cli("disable", "alice").exit_code == 0 and cli("disable", "alice").exit_code == 0
    assert [e.type for e in outbox(db)][-1] == "user.disabled" and len(outbox(db)) == 4


@pytest.mark.parametrize("command", ["disable", "enable", "set-password", "grant", "revoke"])
def test_an_unknown_user_is_a_clear_error(db: str, command: str) -> None:
    extra = ["x:y"] if command in ("grant", "revoke") else []
    result = cli(command, "nobody", *extra, input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 1
    assert "no user named 'nobody'" in result.stderr


# -- passwords and permissions ---------------------------------------------------------------


def test_set_password_replaces_the_password(db: str) -> None:
    assert cli("create", "alice", "--password", PASSWORD).exit_code == 0
    new = "a whole new passphrase"
    result = cli("set-password", "alice", input=f"{new}\n{new}\n")
    assert result.exit_code == 0, result.output
    verify(db, "alice", new)
    with pytest.raises(InvalidCredentials):
        verify(db, "alice", PASSWORD)
    newer = "and yet another one"
    assert cli("set-password", "alice", "--password-stdin", input=f"{newer}\n").exit_code == 0
    verify(db, "alice", newer)
    assert [e.action for e in audit(db)][:2] == ["user.password_reset"] * 2


def test_set_password_refuses_a_weak_password(db: str) -> None:
    assert cli("create", "alice", "--password", PASSWORD).exit_code == 0
    result = cli("set-password", "alice", "--password-stdin", input="alice\n")
    assert result.exit_code == 1 and "password:" in result.stderr
    verify(db, "alice", PASSWORD)


def test_grant_and_revoke_direct_permissions(db: str) -> None:
    make_role(db, "readers", "orders:read")
    assert cli("create", "alice", "--password", PASSWORD, "--role", "readers").exit_code == 0
    result = cli("grant", "alice", "orders:write", "events:read")
    assert result.exit_code == 0, result.output
    assert verify(db, "alice", PASSWORD).user.permissions == {"orders:write", "events:read"}
    result = cli("revoke", "alice", "events:read", "orders:read")
    assert result.exit_code == 0, result.output
    # orders:read comes with the role: revoking it directly changes nothing, and says so.
    assert "no direct permission 'orders:read' (it comes with a role)" in result.stderr
    profile = verify(db, "alice", PASSWORD)
    assert profile.user.permissions == {"orders:write"}
    assert profile.effective_permissions == {"orders:write", "orders:read"}
    changes = [e for e in audit(db) if e.action == "user.permissions_set"]
    assert [e.details["permissions"] for e in changes] == [
        ["orders:write"],
        ["events:read", "orders:write"],
    ]
    assert all(e.actor == "cli" for e in changes)
    announced = [e.data for e in outbox(db) if e.type == "user.permissions_changed"]
    assert [(d["permissions"], d["added"], d["removed"]) for d in announced] == [
        (["events:read", "orders:read", "orders:write"], ["events:read", "orders:write"], []),
        (["orders:read", "orders:write"], [], ["events:read"]),
    ]


def test_grant_refuses_an_invalid_permission(db: str) -> None:
    assert cli("create", "alice", "--password", PASSWORD).exit_code == 0
    result = cli("grant", "alice", "orders:read", "no\\pe")
    assert result.exit_code == 1 and "permission 'no\\\\pe'" in result.stderr
    assert verify(db, "alice", PASSWORD).user.permissions == frozenset()


def test_an_unmigrated_database_says_to_migrate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTHBUS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("AUTHBUS_USER__DATABASE_URL", raising=False)
    result = cli("list")
    assert result.exit_code == 1
    assert "authbus migrate user" in result.stderr


# -- import --------------------------------------------------------------------------------------


def bcrypt_hash(password: str, prefix: bytes = b"2b") -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4, prefix)).decode()


def argon2_hash(password: str) -> str:
    # Parameters other than the configured ones: verified, then upgraded at login.
    return PasswordHasher(memory_kib=2048, time_cost=1, parallelism=1).hash_sync(password)


def csv_cell(text: str) -> str:
    """A quoted CSV cell: argon2 hashes hold commas (`m=2048,t=1,p=1`)."""
    return '"' + text.replace('"', '""') + '"'


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("username,email,password_hash,permissions,roles,disabled\n" + "\n".join(rows))
    return path


def test_import_keeps_bcrypt_hashes_and_a_login_upgrades_them(db: str, tmp_path: Path) -> None:
    legacy = bcrypt_hash("an old bcrypt password")
    assert legacy.startswith("$2b$")
    path = write_csv(tmp_path / "users.csv", [f"carol,carol@example.com,{legacy},orders:read,,"])
    result = cli("import", str(path))
    assert result.exit_code == 0, result.output
    assert "created 1, skipped 0, failed 0" in result.stdout
    assert stored_hash(db, "carol") == legacy

    profile = verify(db, "carol", "an old bcrypt password")
    assert profile.user.email == "carol@example.com"
    assert profile.effective_permissions == {"orders:read"}
    upgraded = stored_hash(db, "carol")
    assert upgraded.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    verify(db, "carol", "an old bcrypt password")
    assert stored_hash(db, "carol") == upgraded
    created = [e for e in audit(db) if e.action == "user.created"]
    assert created[0].actor == "cli" and created[0].details["imported"] is True
    assert [e.type for e in outbox(db)] == ["user.created"]


def test_import_reports_each_row_and_keeps_the_good_ones(db: str, tmp_path: Path) -> None:
    make_role(db, "readers", "orders:read")
    assert cli("create", "alice", "--password", PASSWORD).exit_code == 0
    path = write_csv(
        tmp_path / "users.csv",
        [
            f"bob,,{bcrypt_hash('bob password 2y', b'2a').replace('$2a$', '$2y$')},,readers,",
            f"dave,,{csv_cell(argon2_hash('dave password'))},x:y,,true",
            f"ALICE,,{bcrypt_hash('whatever')},,,",  # exists: skipped
            "erin,,$1$saltsalt$3bX0u1qJ3H3kA2mE7u8r/.,,,",  # md5-crypt
            "frank,,plaintext-password,,,",
            f"gina,,{csv_cell(argon2_hash('x').replace('$argon2id$', '$argon2i$'))},,,",
            f"Bob,,{bcrypt_hash('again')},,,",  # repeats row 2
            f"hank,,{bcrypt_hash('h')},,nosuchrole,",
            f"ivan,,{bcrypt_hash('i')},,,maybe",
            f"jo,,{bcrypt_hash('j')},,,",  # username too short
            "kim,,,,,",  # no hash
            f"lena,,{bcrypt_hash('l')[:-5]},,,",  # truncated
        ],
    )
    result = cli("import", str(path))
    assert result.exit_code == 1
    assert "created 2, skipped 1, failed 9" in result.stdout
    assert "row 4 (ALICE): skipped: exists already" in result.stdout
    err = result.stderr
    assert "row 5 (erin): failed: password_hash: a $1$ hash; only bcrypt" in err
    assert "row 6 (frank): failed: password_hash: not a recognised hash" in err
    assert "row 7 (gina): failed: password_hash: a $argon2i$ hash" in err
    assert "row 8 (Bob): failed: username repeats row 2" in err
    assert "row 9 (hank): failed: no such role: nosuchrole" in err
    assert "row 10 (ivan): failed: disabled: expected true or false" in err
    assert "row 11 (jo): failed: username: must be 3 to 64" in err
    assert "row 12 (kim): failed: password_hash: missing" in err
    assert "row 13 (lena): failed: password_hash: not a well-formed bcrypt hash" in err
    assert usernames(db) == ["alice", "bob", "dave"]

    assert verify(db, "bob", "bob password 2y").effective_permissions == {"orders:read"}
    assert stored_hash(db, "bob").startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    with pytest.raises(UserDisabled):
        verify(db, "dave", "dave password")
    assert stored_hash(db, "dave").startswith("$argon2id$v=19$m=1024,t=1,p=1$")

    # Re-running the import creates nothing twice; "Bob" now exists, so is skipped too.
    again = cli("import", str(path))
    assert "created 0, skipped 4, failed 8" in again.stdout
    assert "row 8 (Bob): skipped: exists already" in again.stdout


def test_strict_import_writes_nothing_when_a_row_fails(db: str, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "users.csv",
        [f"bob,,{bcrypt_hash('b')},,,", "carol,,not-a-hash,,,"],
    )
    result = cli("import", "--strict", str(path))
    assert result.exit_code == 1
    assert "created 0, skipped 0, failed 1" in result.stdout
    assert "nothing was imported" in result.stderr
    assert usernames(db) == [] and audit(db) == [] and outbox(db) == []


def test_strict_import_of_good_rows_creates_all(db: str, tmp_path: Path) -> None:
    assert cli("create", "alice", "--password", PASSWORD).exit_code == 0
    path = write_csv(
        tmp_path / "users.csv",
        [f"bob,,{bcrypt_hash('b')},,,", f"carol,,{csv_cell(argon2_hash('c'))},,,", "alice,,x,,,"],
    )
    # alice exists: skipped before her hash is even looked at, so not a failure.
    result = cli("import", "--strict", str(path))
    assert result.exit_code == 0, result.output
    assert "created 2, skipped 1, failed 0" in result.stdout
    assert usernames(db) == ["alice", "bob", "carol"]
    assert sum(e.action == "user.created" for e in audit(db)) == 3


def test_import_json(db: str, tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    path.write_text(
        json.dumps(
            [
                {
                    "username": "carol",
                    "email": "carol@example.com",
                    "password_hash": bcrypt_hash("carol's old password"),
                    "permissions": ["orders:read", "orders:write"],
                    "disabled": False,
                },
                {"username": "dave", "password_hash": argon2_hash("dave"), "roles": "nope"},
                "not an object",
            ]
        )
    )
    result = cli("import", str(path))
    assert result.exit_code == 1
    assert "created 1, skipped 0, failed 2" in result.stdout
    assert "row 2 (dave): failed: no such role: nope" in result.stderr
    assert "row 3 (?): failed: not a JSON object" in result.stderr
    profile = verify(db, "carol", "carol's old password")
    assert profile.effective_permissions == {"orders:read", "orders:write"}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("users.txt", "username,password_hash\n", "name the file .csv or .json"),
        ("users.csv", "name,hash\nbob,x\n", "CSV header lacks the column(s): username"),
        ("users.json", "[{", "JSON: "),
        ("users.json", '{"name": "bob"}', "expected a list of users"),
    ],
)
def test_import_refuses_an_unreadable_file(
    db: str, tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    result = cli("import", str(path))
    assert result.exit_code == 1 and message in result.stderr
    assert usernames(db) == []


def test_import_of_a_missing_file_is_a_clear_error(db: str, tmp_path: Path) -> None:
    result = cli("import", str(tmp_path / "nope.csv"))
    assert result.exit_code == 1 and "No such file" in result.stderr
