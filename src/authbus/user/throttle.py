"""Throttle of failed credential checks per (username, client address).

After `free_attempts` failures each further failure locks the pair for a delay that doubles
up to `max_delay_s`; a success resets it. Attempts in flight count too: once the free
attempts are used up (finished or running), a pair gets one attempt at a time, so a burst
of parallel guesses cannot slip through before the first failures are recorded. Lockout
is bounded (never longer than `max_delay_s` after the last failure) and keyed by address
too, so an attacker elsewhere cannot lock the real owner out for long.

State is kept in memory, per process: a failed guess then costs no database write (an
attacker cannot turn guessing into write load), and the state is short-lived by nature.
The price: with N worker processes an attacker gets up to N times the attempts; the
limit stays bounded. See docs/decisions.md.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from authbus.user.domain import normalize_username


@dataclass(slots=True)
class _Failures:
    count: int
    last_failure: float
    locked_until: float
    in_flight: int = 0


class LoginThrottle:
    """Growing delays after repeated failures; bounded memory (oldest entries dropped).

    >>> t = LoginThrottle(free_attempts=1, base_delay_s=2, max_delay_s=60)
    >>> t.record_failure("alice", "10.0.0.1"); t.record_failure("alice", "10.0.0.1")
    >>> 0 < t.retry_after("alice", "10.0.0.1") <= 2
    True
    """

    def __init__(
        self,
        *,
        free_attempts: int,
        base_delay_s: float,
        max_delay_s: float,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free_attempts = free_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Failures] = OrderedDict()

    @staticmethod
    def _key(username: str, address: str | None) -> tuple[str, str]:
        return normalize_username(username), address or ""

    def _current(self, key: tuple[str, str], now: float) -> _Failures | None:
        entry = self._entries.get(key)
        # Failures are forgotten once quiet for twice the longest delay.
        if entry is not None and now - entry.last_failure > 2 * self.max_delay_s:
            del self._entries[key]
            return None
        return entry

    def retry_after(self, username: str, address: str | None) -> int:
        """Seconds until the next attempt is allowed (0: allowed now)."""
        now = self._clock()
        entry = self._current(self._key(username, address), now)
        if entry is None:
            return 0
        if entry.locked_until > now:
            return max(1, math.ceil(entry.locked_until - now))
        if entry.in_flight and entry.count + entry.in_flight >= self.free_attempts:
            return 1
        return 0

    def begin(self, username: str, address: str | None) -> int:
        """Start an attempt: 0 if allowed (then end it with `record_failure`,
        `record_success` or `abandon`), else the seconds to wait."""
        if wait := self.retry_after(username, address):
            return wait
        now = self._clock()
        key = self._key(username, address)
        entry = self._current(key, now) or _Failures(0, now, now)
        entry.in_flight += 1
        self._store(key, entry)
        return 0

    def abandon(self, username: str, address: str | None) -> None:
        """End an attempt that failed for another reason (e.g. the database was down)."""
        entry = self._entries.get(self._key(username, address))
        if entry is not None:
            entry.in_flight = max(0, entry.in_flight - 1)

    def _store(self, key: tuple[str, str], entry: _Failures) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def record_failure(self, username: str, address: str | None) -> None:
        """Count a failed attempt and extend the lock when past the free attempts."""
        now = self._clock()
        key = self._key(username, address)
        entry = self._current(key, now) or _Failures(0, now, now)
        entry.in_flight = max(0, entry.in_flight - 1)
        entry.count += 1
        entry.last_failure = now
        over = entry.count - self.free_attempts
        if over > 0:
            delay = min(self.base_delay_s * 2 ** min(over - 1, 32), self.max_delay_s)
            entry.locked_until = now + delay
        self._store(key, entry)

    def record_success(self, username: str, address: str | None) -> None:
        """The right password: forget the failures of this pair."""
        key = self._key(username, address)
        entry = self._entries.get(key)
        if entry is None:
            return
        if entry.in_flight > 1:
            # Other attempts are still running; they end on this fresh slate.
            self._entries[key] = _Failures(0, entry.last_failure, 0.0, entry.in_flight - 1)
        else:
            del self._entries[key]
