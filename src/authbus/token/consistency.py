"""Consistency across services: the token service follows the user service's `users` channel.

When a user is disabled, deleted or loses permissions, every refresh family, active access
token, SSO session and pending authorization code issued to that user is revoked, so the
user is locked out within seconds rather than at token expiry (issue 4 item 7).

    revoker = UserGrantRevoker(store)
    await revoker.apply(event)                      # what the subscriber calls per event
    subscriber = UserEventsSubscriber(revoker, redis_url, prefix="ab")
    task = asyncio.create_task(subscriber.serve())    # in the app lifespan; .stop() at the end
"""

from __future__ import annotations

import logging
from typing import Any

from authbus.common.subscriber import Event, EventSubscriber
from authbus.token.store import TokenStore

log = logging.getLogger("authbus.token.consistency")

USERS_CHANNEL = "users"
SUBSCRIBER_NAME = "token-service"

# The event types that end a user's grants: what the user service publishes (a role change
# yields one `user.permissions_changed` per member whose effective permissions moved). The
# last two are the names it published before those events existed; kept so events already
# in the log or in delivery lists during an upgrade still revoke.
REVOKING_EVENTS = frozenset(
    {
        "user.disabled",
        "user.deleted",
        "user.permissions_changed",
        "user.permissions_set",
        "user.roles_set",
    }
)


def revoked_user_id(event: Event) -> str | None:
    """The id of the user whose grants `event` ends, or None when it ends nothing.

    The user id is `data["id"]` (the user service's payload), else the aggregate id of a
    `user` aggregate. `user.updated` counts when it sets `disabled` to true.
    """
    data: dict[str, Any] = event.data
    revoking = event.type in REVOKING_EVENTS or (
        event.type == "user.updated" and data.get("disabled") is True
    )
    if not revoking:
        return None
    user_id = data.get("id") or data.get("user_id")
    if not user_id and event.aggregate_type in (None, "user"):
        user_id = event.aggregate_id
    return str(user_id) if user_id else None


class UserGrantRevoker:
    """Applies user events to the token store. Idempotent: revoking twice revokes nothing."""

    def __init__(self, store: TokenStore) -> None:
        self.store = store
        self.revocations = 0

    async def apply(self, event: Event) -> int:
        """Revoke what `event` calls for; returns how many grants were revoked."""
        user_id = revoked_user_id(event)
        if user_id is None:
            return 0
        count = await self.store.revoke_user(user_id)
        self.revocations += 1
        log.info(
            "user grants revoked",
            extra={"event_id": event.id, "event_type": event.type, "revoked": count},
        )
        return count


class UserEventsSubscriber(EventSubscriber):
    """The token service's consumer of the `users` channel (one name for all replicas)."""

    channel = USERS_CHANNEL
    name = SUBSCRIBER_NAME

    def __init__(self, revoker: UserGrantRevoker, redis_url: str, **options: Any) -> None:
        super().__init__(redis_url, **options)
        self.revoker = revoker

    async def process_event(self, event: Event) -> None:
        # A store failure raises, so the delivery is retried (at-least-once).
        await self.revoker.apply(event)
