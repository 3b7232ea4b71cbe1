"""The event service's tables (its own MetaData and Alembic history).

`events.position` is the global, gap-tolerant order of the log (an autoincrement key);
`id` is a UUIDv7 for references across services. `dispatched` is false until the event was
fanned out to Redis, so the dispatcher can finish what a Redis outage interrupted.
`dead_letter_trims` counts the dead letters dropped from a subscriber's bounded Redis dead
list (the events themselves stay in `events`).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    false,
)

metadata = MetaData(
    info={"service": "event"},
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    },
)

# SQLite only autoincrements an INTEGER PRIMARY KEY (its rowid); Postgres gets a bigint.
PositionType = BigInteger().with_variant(Integer(), "sqlite")

events = Table(
    "events",
    metadata,
    Column("position", PositionType, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("channel", String(128), nullable=False),
    Column("type", String(200), nullable=False),
    Column("data", JSON, nullable=False),
    Column("aggregate_type", String(128)),
    Column("aggregate_id", String(200)),
    Column("aggregate_version", BigInteger),
    Column("correlation_id", String(200)),
    Column("causation_id", String(200)),
    Column("producer", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("dispatched", Boolean, nullable=False, server_default=false()),
    # Optimistic concurrency: two writers expecting the same version cannot both win.
    Index(
        "uq_events_aggregate_version",
        "aggregate_type",
        "aggregate_id",
        "aggregate_version",
        unique=True,
    ),
    Index("ix_events_channel_position", "channel", "position"),
    Index("ix_events_dispatched_position", "dispatched", "position"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("producer", String(200), nullable=False),
    Column("key", String(200), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("positions", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("producer", "key"),
)

# Per subscriber: how many of its dead letters were trimmed from the bounded Redis dead list.
dead_letter_trims = Table(
    "dead_letter_trims",
    metadata,
    Column("channel", String(128), nullable=False),
    Column("subscriber", String(128), nullable=False),
    Column("trimmed", BigInteger, nullable=False),
    Column("last_trimmed_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("channel", "subscriber"),
)
