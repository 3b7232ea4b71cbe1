"""authbus.common's public surface: exactly the names in __all__, each documented."""

from __future__ import annotations

import inspect
import subprocess
import sys

import authbus.common
import authbus.common.security
import authbus.common.token_auth

EXPECTED = {
    "AsyncEventPublisher",
    "AsyncRefreshTokenAuth",
    "AsyncTokenAuth",
    "AuthbusClientError",
    "BrowserLogin",
    "Caller",
    "Event",
    "EventPublisher",
    "EventSubscriber",
    "IntrospectionRevocationCheck",
    "InvalidTokenError",
    "ProcessedGuard",
    "PublishError",
    "RedisRevocationCheck",
    "RefreshTokenAuth",
    "TokenAuth",
    "TokenCheckUnavailable",
    "TokenError",
    "TokenValidator",
    "requires",
}


def test_all_lists_exactly_the_public_names() -> None:
    assert set(authbus.common.__all__) == EXPECTED
    assert len(authbus.common.__all__) == len(EXPECTED)


def test_every_public_name_resolves_and_has_a_docstring() -> None:
    for module in (authbus.common, authbus.common.security, authbus.common.token_auth):
        for name in module.__all__:
            value = getattr(module, name)
            doc = inspect.getdoc(value)
            assert doc and len(doc) > 20, f"{module.__name__}.{name} needs a docstring"


def test_public_classes_document_their_public_methods() -> None:
    for name in authbus.common.__all__:
        value = getattr(authbus.common, name)
        if not inspect.isclass(value) or not value.__module__.startswith("authbus.common"):
            continue
        for attr, member in vars(value).items():
            if attr.startswith("_") or not callable(member):
                continue
            assert inspect.getdoc(member), f"{name}.{attr} needs a docstring"


def test_dir_lists_lazy_names() -> None:
    assert set(dir(authbus.common)) >= EXPECTED


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        _ = authbus.common.NoSuchThing
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_the_client_library_does_not_import_fastapi_or_services() -> None:
    # A fresh interpreter: `pip install authbus` has no FastAPI, and common must not
    # depend on the services.
    code = (
        "import sys; import authbus.common as c; "
        "c.TokenAuth; c.AsyncTokenAuth; c.TokenValidator; c.EventPublisher; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette') "
        "or m.startswith(('authbus.user', 'authbus.token', 'authbus.event', 'authbus.core'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_missing_fastapi_gives_a_clear_error_for_requires_only() -> None:
    code = (
        "import sys; sys.modules['fastapi'] = None; import authbus.common as c; c.TokenAuth\n"
        "try:\n    c.requires\nexcept ImportError as e:\n    print(e); sys.exit(0)\n"
        "sys.exit(1)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "authbus[server]" in result.stdout


OWN_MODULES = (
    "authbus.common._errors",
    "authbus.common._login",
    "authbus.common._revocation",
    "authbus.common._validator",
    "authbus.common.security",
    "authbus.common.token_auth",
)


def _shows_an_example(value: object) -> bool:
    """An `Example:` section, a doctest, or an indented code block."""
    doc = inspect.getdoc(value) or ""
    code_block = any(line.startswith("    ") for line in doc.splitlines()[1:])
    return "Example" in doc or ">>>" in doc or code_block


def test_every_public_name_shows_an_example() -> None:
    without = {
        n for n in authbus.common.__all__ if not _shows_an_example(getattr(authbus.common, n))
    }
    assert without == set()


def test_public_names_of_the_token_side_show_an_example() -> None:
    for name in authbus.common.__all__:
        value = getattr(authbus.common, name)
        if getattr(value, "__module__", None) not in OWN_MODULES:
            continue
        assert _shows_an_example(value), f"{name} needs a short example"


def test_the_library_is_marked_typed() -> None:
    # PEP 561: without py.typed, mypy ignores the annotations of an installed authbus.
    from importlib import resources

    assert resources.files("authbus.common").joinpath("py.typed").is_file()
    assert resources.files("authbus").joinpath("py.typed").is_file()


def test_docstring_examples_run() -> None:
    import doctest
    import importlib

    for module_name in (*OWN_MODULES, "authbus.common._oauth", "authbus.common._transport"):
        module = importlib.import_module(module_name)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module_name
