"""The event half of the client library stays free of the server stack."""

from __future__ import annotations

import subprocess
import sys


def test_subscriber_and_publisher_import_without_fastapi_or_sqlalchemy() -> None:
    code = (
        "import sys\n"
        "import authbus.common.subscriber, authbus.common.publisher\n"
        "heavy = {'fastapi', 'sqlalchemy', 'starlette', 'authbus.event', 'authbus.core'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
