"""`authbus events ...`: delivery stats and dead letters, straight from Redis and the event log.

The commands read the same settings as the event service (`AUTHBUS_REDIS_URL`,
`AUTHBUS_REDIS_PREFIX`, `AUTHBUS_EVENT__DATABASE_URL`) and work whether or not the service
runs, which is when dead letters most need looking at. They go through the same code as the
admin API (`Subscriptions`, the Lua scripts), so both behave alike.

    authbus events stats                          # every channel in the log, as a table
    authbus events stats orders --json
    authbus events dead list orders billing
    authbus events dead requeue orders billing --event-id 0192...
    authbus events dead purge orders billing --yes

Only `typer` is imported here at module level; Redis and database code load when a command runs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from authbus.event.subscriptions import ChannelStats, Subscriptions

T = TypeVar("T")

events_app = typer.Typer(
    name="events", help="Watch event delivery and handle dead letters.", no_args_is_help=True
)
dead_app = typer.Typer(
    name="dead", help="Inspect, requeue or purge a subscriber's dead letters.", no_args_is_help=True
)
events_app.add_typer(dead_app, name="dead")

ChannelArg = Annotated[str, typer.Argument(help="The channel, e.g. orders.")]
SubscriberArg = Annotated[str, typer.Argument(help="The subscriber name, e.g. billing.")]
EventIdOpt = Annotated[
    str | None, typer.Option("--event-id", help="Only the dead letters of this event id.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _check_names(*names: str) -> None:
    from authbus.common._envelope import valid_name

    for name in names:
        if not valid_name(name):
            typer.echo(
                f"error: {name!r} is not a valid channel or subscriber name "
                "(1-128 of letters, digits, '.', '_', '-', starting with a letter or digit)",
                err=True,
            )
            raise typer.Exit(2)


def _run(work: Callable[[Subscriptions], Awaitable[T]]) -> T:
    """Run `work` with a `Subscriptions` on the configured Redis and event log."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    from authbus.core.db import create_engine, create_sessionmaker
    from authbus.core.errors import AuthbusError, NotFound
    from authbus.core.redis import create_redis
    from authbus.core.settings import Settings, redact_url
    from authbus.event.log import SqlEventLog
    from authbus.event.subscriptions import Subscriptions

    settings = Settings()
    if not settings.redis_url:
        typer.echo(
            "error: AUTHBUS_REDIS_URL is not set, so there is no event delivery to inspect",
            err=True,
        )
        raise typer.Exit(1)
    redis_url = settings.redis_url

    async def main() -> T:
        # The engine connects only if the command reads the log (stats: channels, trims).
        engine = create_engine(settings.database_url("event"))
        client = create_redis(redis_url, decode_responses=True)
        log = SqlEventLog(create_sessionmaker(engine))
        try:
            subs = Subscriptions(
                client,
                settings.redis_prefix,
                log,
                stale_after_s=settings.event.subscriber_stale_after_s,
                max_waiting=settings.event.max_waiting_per_subscriber,
            )
            return await work(subs)
        finally:
            await client.aclose()
            await log.close()
            await engine.dispose()

    try:
        return asyncio.run(main())
    except NotFound as exc:  # SubscriberNotFound: a verdict on the names, not on Redis
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    except AuthbusError as exc:  # Redis unreachable (DeliveryUnavailable) and the like
        typer.echo(f"error: {exc.message} (redis: {redact_url(redis_url)})", err=True)
        raise typer.Exit(1) from None
    except (OperationalError, DBAPIError) as exc:
        typer.echo(
            f"error: the event database is not usable ({type(exc.orig).__name__}); "
            "is it reachable and migrated (`authbus migrate event`)?",
            err=True,
        )
        raise typer.Exit(1) from None


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


# ------------------------------------------------------------------------------ stats


def _age(seconds: float) -> str:
    if seconds < 1:
        return "-" if seconds <= 0 else "<1s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _stats_rows(found: list[ChannelStats]) -> list[list[str]]:
    rows = [
        [
            "CHANNEL",
            "SUBSCRIBER",
            "WAITING",
            "PROCESSING",
            "DEAD",
            "OLDEST",
            "INSTANCES",
            "LAST SEEN",
            "STATE",
        ]
    ]
    for channel in found:
        for s in channel.subscribers:
            live = [i for i in s.instances if not i["stale"]]
            last = min((i["last_seen_ms_ago"] for i in s.instances), default=None)
            state = []
            if s.lagging_since_position is not None:
                state.append(f"lagging since {s.lagging_since_position}")
            if s.stale:
                state.append("stale")
            if s.dead:
                state.append("dead letters")
            if s.dead_trimmed:
                state.append(f"{s.dead_trimmed} dead trimmed")
            rows.append(
                [
                    channel.channel,
                    s.name,
                    str(s.waiting),
                    str(s.processing),
                    str(s.dead),
                    _age(s.oldest_waiting_age_s),
                    f"{len(live)}/{len(s.instances)}",
                    "never" if last is None else f"{_age(last / 1000)} ago",
                    ", ".join(state) or "ok",
                ]
            )
    return rows


@events_app.command("stats")
def stats(
    channels: Annotated[
        list[str] | None, typer.Argument(help="Channels to show (default: every one in the log).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Per subscriber: waiting, processing, dead, oldest waiting age, instances, state."""
    _check_names(*(channels or ()))

    async def work(subs: Subscriptions) -> list[ChannelStats]:
        names = channels or [c.channel for c in await subs.log.channels()]
        return [await subs.stats(name) for name in names]

    found = _run(work)
    if as_json:
        _print_json(
            {
                "channels": [
                    {"channel": c.channel, "subscribers": [s.__dict__ for s in c.subscribers]}
                    for c in found
                ]
            }
        )
        return
    rows = _stats_rows(found)
    if len(rows) == 1:
        typer.echo("no subscribers" + ("" if channels else " (no channel in the log yet)"))
        return
    typer.echo(_table(rows))
    typer.echo(
        "INSTANCES: seen recently / known. OLDEST: age of the oldest waiting event.", err=True
    )


# ------------------------------------------------------------------------ dead letters


@dead_app.command("list")
def dead_list(
    channel: ChannelArg,
    subscriber: SubscriberArg,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Newest first, at most.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Show a subscriber's dead letters (newest first) with the attempt each gave up at.

    An error when the subscriber neither subscribes to the channel nor has dead letters there.
    """
    _check_names(channel, subscriber)

    async def work(subs: Subscriptions) -> list[dict[str, Any]]:
        letters = await subs.dead_letters(channel, subscriber, limit=limit)
        return [
            {
                "attempt": d.attempt,
                "event": d.event.model_dump(mode="json") if d.event else None,
                "raw": None if d.event else d.raw,
            }
            for d in letters
        ]

    letters = _run(work)
    if as_json:
        _print_json({"dead_letters": letters})
        return
    if not letters:
        typer.echo(f"no dead letters for {subscriber!r} on {channel!r}")
        return
    rows = [["EVENT ID", "POSITION", "TYPE", "ATTEMPTS", "CREATED"]]
    for d in letters:
        e = d["event"]
        if e is None:
            rows.append(["(unreadable)", "-", "-", "-", str(d["raw"])[:60]])
        else:
            rows.append(
                [e["id"], str(e["position"]), e["type"], str(d["attempt"]), e["created_at"]]
            )
    typer.echo(_table(rows))


@dead_app.command("requeue")
def dead_requeue(
    channel: ChannelArg,
    subscriber: SubscriberArg,
    event_id: EventIdOpt = None,
) -> None:
    """Move dead letters (all, or one event's) back to the subscriber's queue at attempt 1.

    An error when the subscriber does not subscribe to the channel (the dead letters a removed
    subscriber left can be listed and purged).
    """
    _check_names(channel, subscriber)

    async def work(subs: Subscriptions) -> int:
        return await subs.requeue_dead(channel, subscriber, event_id)

    count = _run(work)
    if event_id and not count:
        typer.echo(f"error: no dead letter of event {event_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"requeued {count} dead letter(s) for {subscriber!r} on {channel!r}")


@dead_app.command("purge")
def dead_purge(
    channel: ChannelArg,
    subscriber: SubscriberArg,
    event_id: EventIdOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete dead letters (all, or one event's); the events stay in the log.

    An error when the subscriber neither subscribes to the channel nor has dead letters there.
    """
    _check_names(channel, subscriber)
    if not yes:
        # An unknown name is an error before the question, not after it.
        _run(lambda subs: subs.require_known(channel, subscriber))
        what = f"the dead letters of event {event_id!r}" if event_id else "every dead letter"
        typer.confirm(f"Delete {what} of {subscriber!r} on {channel!r}?", abort=True)

    async def work(subs: Subscriptions) -> int:
        return await subs.purge_dead(channel, subscriber, event_id)

    count = _run(work)
    if event_id and not count:
        typer.echo(f"error: no dead letter of event {event_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"purged {count} dead letter(s) for {subscriber!r} on {channel!r}")
