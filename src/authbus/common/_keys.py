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

    def processed(self, subscriber: str, event_id: str) -> str:
        """String with TTL: `subscriber` finished `event_id` (the processed-id guard)."""
        return f"{self._base}:processed:{subscriber}:{event_id}"


def token_key(prefix: str, jti: str) -> str:
    """String with TTL: an issued access token that is still active (deleted on revocation)."""
    return f"{prefix}:token:{jti}"


@dataclass(frozen=True, slots=True)
class TokenStoreKeys:
    """Keys of the token service's store (beside `token_key`, which every service reads).

    Keys of one refresh family share the hash tag `{rf:<family>}` and a code and its used
    marker share `{code:<hash>}`, so each Lua script touches one Redis Cluster slot.

        k = TokenStoreKeys("ab")
        k.refresh("fam", "digest")   # 'ab:{rf:fam}:rt:digest'
    """

    prefix: str

    def access(self, jti: str) -> str:
        """String with TTL: an active access token (same key as `token_key`)."""
        return token_key(self.prefix, jti)

    def code(self, code_hash: str) -> str:
        """String with TTL: an authorization code's grant, until redeemed (GETDEL)."""
        return f"{self.prefix}:{{code:{code_hash}}}"

    def code_used(self, code_hash: str) -> str:
        """String with TTL: a redeemed code's marker, holding what it issued."""
        return f"{self.prefix}:{{code:{code_hash}}}:used"

    def family(self, family: str) -> str:
        """String with TTL: a refresh-token family, alive iff the key exists."""
        return f"{self.prefix}:{{rf:{family}}}:family"

    def family_tokens(self, family: str) -> str:
        """Set: jtis of the access tokens issued from a refresh family."""
        return f"{self.prefix}:{{rf:{family}}}:jtis"

    def refresh(self, family: str, token_hash: str) -> str:
        """String with TTL: one refresh token's record."""
        return f"{self.prefix}:{{rf:{family}}}:rt:{token_hash}"

    def refresh_rotated(self, family: str, token_hash: str) -> str:
        """String with TTL: when a refresh token was rotated (ms), for reuse detection."""
        return f"{self.prefix}:{{rf:{family}}}:rt:{token_hash}:rotated"

    def session(self, session_hash: str) -> str:
        """String with TTL: an SSO session."""
        return f"{self.prefix}:sso:{session_hash}"

    def user_grants(self, subject: str) -> str:
        """Sorted set, scored by expiry (ms): what was issued to one user (`f:<family>`,
        `a:<jti>`, `s:<session>`, `c:<code>`), so it can all be revoked at once."""
        return f"{self.prefix}:{{user:{subject}}}:grants"

    def user_not_before(self, subject: str) -> str:
        """String with TTL: epoch ms before which a grant checked for the user is refused
        (set when the user's rights change; same hash tag as `user_grants`)."""
        return f"{self.prefix}:{{user:{subject}}}:not_before"
