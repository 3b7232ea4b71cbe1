"""Retry timing shared by the publisher and the subscriber: jittered backoff, Retry-After.

"Full jitter" (a uniform draw between 0 and the exponential cap) spreads the retries of
many clients that failed at the same moment, so a recovering server is not hit by all of
them at once.

    backoff = Backoff(base=0.1, cap=5.0)
    await asyncio.sleep(backoff.next_delay())     # 0..0.1, then 0..0.2, 0..0.4, ... 0..5
    backoff.reset()                               # after a success
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["Backoff", "exponential", "parse_retry_after"]


def exponential(attempt: int, base: float, cap: float) -> float:
    """`base * 2**(attempt - 1)`, at most `cap` (attempt 1 waits `base`).

    >>> [exponential(n, 0.5, 3.0) for n in (1, 2, 3, 4)]
    [0.5, 1.0, 2.0, 3.0]
    """
    if attempt < 1 or base <= 0:
        return 0.0
    # 2**62 already exceeds every sensible cap; avoid building huge floats.
    return float(min(cap, base * 2 ** min(attempt - 1, 62)))


class Backoff:
    """Successive full-jitter delays: the n-th is uniform in [0, min(cap, base * 2**(n-1))].

    `rng` may be a seeded `random.Random` to make the delays reproducible.

    >>> b = Backoff(base=1.0, cap=4.0, rng=random.Random(7))
    >>> all(0 <= b.next_delay() <= limit for limit in (1, 2, 4, 4, 4))
    True
    """

    def __init__(self, base: float, cap: float, *, rng: random.Random | None = None) -> None:
        if base < 0 or cap < 0:
            raise ValueError("backoff base and cap must not be negative")
        self.base = base
        self.cap = max(cap, base)
        self.rng = rng or random.Random()  # noqa: S311  # timing jitter, not a secret
        self.attempt = 0

    def next_delay(self) -> float:
        """The delay before the next retry; each call raises the exponent by one."""
        self.attempt += 1
        return self.rng.uniform(0.0, exponential(self.attempt, self.base, self.cap))

    def reset(self) -> None:
        """Start again from the smallest delay (call after a success)."""
        self.attempt = 0


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (RFC 9110 §10.2.3), or None.

    The header is either delay-seconds or an HTTP-date; a date in the past means 0.

    >>> parse_retry_after("3"), parse_retry_after("soon"), parse_retry_after(None)
    (3.0, None, None)
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT",
    ...                   now=datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC))
    10.0
    """
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
