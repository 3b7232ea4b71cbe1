"""`python -m examples.orders_service`: serve the example on $ORDERS_HOST:$ORDERS_PORT.

On SIGTERM (docker stop) or Ctrl-C, uvicorn stops accepting connections and lets requests
in flight finish (up to `GRACE_S`); then the lifespan stops the subscriber, which
finishes the events it is handling (up to its `stop_timeout`) before it exits.
"""

from __future__ import annotations

import logging
import sys

import uvicorn

from .app import create_app
from .config import ConfigError, OrdersConfig

# Requests in flight get this long after SIGTERM; compose's stop_grace_period covers it
# plus the subscriber's stop_timeout.
GRACE_S = 10


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = OrdersConfig.from_env()
    except ConfigError as exc:
        print(f"orders_service: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        create_app(config),
        host=config.host,
        port=config.port,
        log_level="info",
        timeout_graceful_shutdown=GRACE_S,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
