"""Orders, kept in memory (it is an example), safe for concurrent requests and events.

One lock guards every read-modify-write, so a `user.disabled` event racing a new order
of the same user cannot leave that order open: the user is remembered as disabled and
later orders are refused.

    store = OrderStore()
    order = store.place("user-1", "book", 2)
    store.cancel_orders_of("user-1")    # -> [order.id]
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

OrderStatus = Literal["open", "cancelled"]


class AccountDisabled(Exception):
    """The user's account was disabled: they may not place orders."""


@dataclass(frozen=True)
class Order:
    id: str
    user_id: str
    item: str
    quantity: int
    status: OrderStatus
    created_at: datetime
    cancel_reason: str | None = None


class OrderStore:
    """Orders by id. A threading lock (not asyncio's): the event handler may run in a
    worker thread when written as a plain function, and every critical section is short."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._orders: dict[str, Order] = {}
        self._disabled_users: set[str] = set()

    def place(self, user_id: str, item: str, quantity: int) -> Order:
        """Store a new open order; `AccountDisabled` when the user was disabled."""
        order = Order(
            id=str(uuid.uuid4()),
            user_id=user_id,
            item=item,
            quantity=quantity,
            status="open",
            created_at=datetime.now(UTC),
        )
        with self._lock:
            if user_id in self._disabled_users:
                raise AccountDisabled(user_id)
            self._orders[order.id] = order
        return order

    def discard(self, order_id: str) -> None:
        """Forget an order whose announcement failed (see `POST /orders`)."""
        with self._lock:
            self._orders.pop(order_id, None)

    def orders_of(self, user_id: str) -> list[Order]:
        """The user's orders, oldest first."""
        with self._lock:
            mine = [o for o in self._orders.values() if o.user_id == user_id]
        return sorted(mine, key=lambda o: o.created_at)

    def get(self, order_id: str) -> Order | None:
        with self._lock:
            return self._orders.get(order_id)

    def cancel_orders_of(self, user_id: str, reason: str = "user disabled") -> list[str]:
        """Cancel every open order of `user_id` and refuse new ones; the ids cancelled.

        Idempotent: a redelivered event cancels nothing more.
        """
        with self._lock:
            self._disabled_users.add(user_id)
            cancelled = []
            for order in self._orders.values():
                if order.user_id == user_id and order.status == "open":
                    cancelled.append(order.id)
            for order_id in cancelled:
                self._orders[order_id] = replace(
                    self._orders[order_id], status="cancelled", cancel_reason=reason
                )
        return cancelled

    def enable(self, user_id: str) -> None:
        """Accept orders from `user_id` again (the account was re-enabled)."""
        with self._lock:
            self._disabled_users.discard(user_id)
