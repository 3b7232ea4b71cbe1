"""Every Redis key authbus uses, built here and nowhere else.

Delivery keys of one channel share the hash tag `{<channel>}` so they live on one Redis
Cluster slot and a Lua script may touch them all (DESIGN.md "Events").

    k = ChannelKeys("ab", "orders")
    k.published("billing")   # 'ab:{orders}:published:billing'
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "ab"


@dataclass(frozen=True, slots=True)
class ChannelKeys:
    prefix: str
    channel: str

    @property
    def _base(self) -> str:
        return f"{self.prefix}:{{{self.channel}}}"

    @property
    def subscribers(self) -> str:
        """Set: names of the subscribing services (many instances share one name)."""
        return f"{self._base}:subscribers"

    @property
    def notify(self) -> str:
        """Pub/sub channel: "events are available"."""
        return f"{self._base}:notify"

    def published(self, subscriber: str) -> str:
        """List: deliveries waiting for `subscriber` (LPUSH in, LMOVE out from the right)."""
        return f"{self._base}:published:{subscriber}"

    def processing(self, subscriber: str) -> str:
        """List: deliveries claimed by an instance and not yet acknowledged."""
        return f"{self._base}:processing:{subscriber}"

    def leases(self, subscriber: str) -> str:
        """Sorted set: in-flight deliveries scored by lease deadline (ms, Redis server time)."""
        return f"{self._base}:leases:{subscriber}"

    def dead(self, subscriber: str) -> str:
        """List: deliveries that failed `max_deliveries` times."""
        return f"{self._base}:dead:{subscriber}"

    def instances(self, subscriber: str) -> str:
        """Sorted set: instance ids of `subscriber` scored by last heartbeat (ms)."""
        return f"{self._base}:instances:{subscriber}"

    def lagging(self) -> str:
        """Hash: subscriber -> log position from which it must catch up (it overflowed)."""
        return f"{self._base}:lagging"


def token_key(prefix: str, jti: str) -> str:
    """String with TTL: an issued access token that is still active (deleted on revocation)."""
    return f"{prefix}:token:{jti}"
