"""`pip install authbus` (the client library) also installs the `authbus` command: without the
`server` extra it says what to install, in one line, and exits 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from authbus.cli import SERVER_EXTRA_MISSING, SERVER_EXTRA_MODULES

# A fresh interpreter in which the server extra's distributions are not installed.
WITHOUT_SERVER_EXTRA = f"""
import importlib.abc, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {sorted(SERVER_EXTRA_MODULES)!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
"""

CONSOLE_SCRIPT = Path(sys.executable).parent / "authbus"


def run(code: str, *args: str, extra: bool = False) -> subprocess.CompletedProcess[str]:
    prelude = "import sys\n" if extra else WITHOUT_SERVER_EXTRA
    return subprocess.run(
        [sys.executable, "-c", prelude + code, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(not CONSOLE_SCRIPT.exists(), reason="authbus is not installed as a script")
@pytest.mark.parametrize("args", [(), ("up",), ("--help",), ("serve", "user")])
def test_the_console_script_says_to_install_the_server_extra(args: tuple[str, ...]) -> None:
    # The script pip generates for `authbus = "authbus.cli:main"`, run as it runs.
    result = run(
        f"import runpy; sys.argv[0] = {str(CONSOLE_SCRIPT)!r}; "
        f"runpy.run_path({str(CONSOLE_SCRIPT)!r}, run_name='__main__')",
        *args,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == SERVER_EXTRA_MISSING + "\n"
    assert result.stdout == ""
    assert "pip install 'authbus[server]'" in SERVER_EXTRA_MISSING


def test_python_dash_m_authbus_says_the_same() -> None:
    result = run("import runpy; runpy.run_module('authbus', run_name='__main__')")
    assert result.returncode == 2, result.stderr
    assert result.stderr == SERVER_EXTRA_MISSING + "\n"


def test_the_client_library_still_imports_without_the_server_extra() -> None:
    result = run("import authbus.common as c; c.TokenAuth; c.EventSubscriber; print('ok')")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"


def test_another_missing_module_is_not_mistaken_for_the_extra() -> None:
    # With the extra, a broken install of something else is still an ImportError with its
    # traceback.
    result = run("sys.modules['authbus.user.cli'] = None\nfrom authbus.cli import main", extra=True)
    assert result.returncode == 1
    assert "ModuleNotFoundError" in result.stderr
    assert SERVER_EXTRA_MISSING not in result.stderr
