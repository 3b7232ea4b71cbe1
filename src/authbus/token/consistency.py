"""Consistency across services: the token service follows the user service's `users` channel.

When a user is disabled, deleted, has their effective permissions changed (directly, through
their roles, or through a change or deletion of one of those roles) or their password changed
or reset, every refresh family, active access token, SSO session and pending authorization
code issued to that user is revoked, so the user is locked out within seconds rather than at
token expiry. The user's "not before" time is set first, so a grant being issued while the
revocation runs (a code redeemed, a login finishing) is refused at its next use or at once.

    revoker = UserGrantRevoker(store)
    await revoker.apply(event)                      # what the subscriber calls per event
    subscriber = UserEventsSubscriber(revoker, redis_url, prefix="ab")
    task = asyncio.create_task(subscriber.serve())    # in the app lifespan; .stop() at the end
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from authbus.common.subscriber import Event, EventSubscriber
from authbus.token.store import TokenStore

log = logging.getLogger("authbus.token.consistency")

USERS_CHANNEL = "users"
SUBSCRIBER_NAME = "token-service"

# How long a "not before" time is kept: the longest a grant can live (a client's
# refresh-token lifetime may be set up to a year).
LONGEST_GRANT_S = 366 * 24 * 3600

# The event types that end a user's grants: what the user service publishes
# (`authbus.user.domain`). A role change or deletion publishes no user-level event of its
# own kind: it yields one `user.permissions_changed` per member whose effective permissions
# moved, in the same transaction (the `role.*` events name no members). The last two are
# the names published before those events existed; kept so events already in the log or in
# delivery lists during an upgrade still revoke.
REVOKING_EVENTS = frozenset(
    {
        "user.disabled",
        "user.deleted",
        "user.permissions_changed",
        "user.permissions_set",
        "user.roles_set",
    }
)


# What `user.updated` lists in `changed` when the password was changed or reset: like
# Keycloak, a new password signs the user out everywhere (a stolen session or refresh token
# must not outlive the password change that was meant to end it).
SIGN_OUT_CHANGES = frozenset({"password"})


def revoked_user_id(event: Event) -> str | None:
    """The id of the user whose grants `event` ends, or None when it ends nothing.

    The user id is `data["id"]` (the user service's payload), else the aggregate id of a
    `user` aggregate. `user.updated` counts when its `changed` names the password (a change
    by the user or a reset by an administrator), or when it sets `disabled` to true (older
    payloads).
    """
    data: dict[str, Any] = event.data
    changed = data.get("changed")
    revoking = event.type in REVOKING_EVENTS or (
        event.type == "user.updated"
        and (
            data.get("disabled") is True
            or (isinstance(changed, list) and any(c in SIGN_OUT_CHANGES for c in map(str, changed)))
        )
    )
    if not revoking:
        return None
    user_id = data.get("id") or data.get("user_id")
    if not user_id and event.aggregate_type in (None, "user"):
        user_id = event.aggregate_id
    return str(user_id) if user_id else None


class UserGrantRevoker:
    """Applies user events to the token store. Idempotent: a second delivery of an event
    finds nothing left of what the first revoked (it ends what was issued in between, as
    any revoking event does)."""

    def __init__(
        self,
        store: TokenStore,
        *,
        hold_s: float = LONGEST_GRANT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.hold_s = hold_s
        self.clock = clock
        self.revocations = 0

    async def apply(self, event: Event) -> int:
        """Revoke what `event` calls for; returns how many grants were revoked."""
        user_id = revoked_user_id(event)
        if user_id is None:
            return 0
        # First the time, then the index: a grant indexed after `revoke_user` read the index
        # was issued after this time was set, and its issuer checks it (`TokenIssuer`).
        await self.store.set_not_before(user_id, self.clock(), self.hold_s)
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
