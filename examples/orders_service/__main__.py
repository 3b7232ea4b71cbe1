"""`python -m examples.orders_service`: serve the example on 127.0.0.1:$ORDERS_PORT."""

from __future__ import annotations

import logging
import sys

import uvicorn

from .app import create_app
from .config import ConfigError, OrdersConfig


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = OrdersConfig.from_env()
    except ConfigError as exc:
        print(f"orders_service: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(create_app(config), host="127.0.0.1", port=config.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
