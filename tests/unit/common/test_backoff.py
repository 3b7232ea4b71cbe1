"""Backoff: full-jitter delays in [0, cap], the cap doubling from the first value to the max.

The delays are random, so the tests either record the bounds each draw was taken between
(a `random.Random` that remembers its `uniform` calls) or look at many draws from seeded
sources: seeded, the statistical checks are deterministic and cannot flake.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import pytest

from authbus.common._backoff import Backoff, exponential, parse_retry_after


class RecordingRandom(random.Random):
    """A seeded random source that remembers the range of every `uniform` draw."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.ranges: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.ranges.append((a, b))
        return super().uniform(a, b)


def nth_delays(n: int, *, base: float, cap: float, seeds: range) -> list[float]:
    """The n-th delay (1-based) of a fresh Backoff, once per seed."""
    found = []
    for seed in seeds:
        backoff = Backoff(base, cap, rng=random.Random(seed))
        for _ in range(n - 1):
            backoff.next_delay()
        found.append(backoff.next_delay())
    return found


def test_each_delay_is_drawn_between_zero_and_a_cap_doubling_up_to_the_max() -> None:
    rng = RecordingRandom(1)
    backoff = Backoff(base=0.1, cap=2.0, rng=rng)

    delays = [backoff.next_delay() for _ in range(8)]

    assert rng.ranges == [
        (0.0, 0.1),
        (0.0, 0.2),
        (0.0, 0.4),
        (0.0, 0.8),
        (0.0, 1.6),
        (0.0, 2.0),  # 3.2 would pass the max: capped
        (0.0, 2.0),
        (0.0, 2.0),
    ]
    assert all(0.0 <= d <= hi for d, (_, hi) in zip(delays, rng.ranges, strict=True))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 10])
def test_over_many_draws_the_nth_delay_fills_zero_to_its_cap_and_never_exceeds_it(
    n: int,
) -> None:
    base, cap = 0.25, 4.0
    limit = min(cap, base * 2 ** (n - 1))

    delays = nth_delays(n, base=base, cap=cap, seeds=range(2000))

    assert all(0.0 <= d <= limit for d in delays)
    # Full jitter: spread over the whole range, not bunched at the cap or at zero.
    assert max(delays) > 0.95 * limit
    assert min(delays) < 0.05 * limit
    assert 0.4 * limit < sum(delays) / len(delays) < 0.6 * limit


def test_reset_starts_over_from_the_first_cap() -> None:
    rng = RecordingRandom(2)
    backoff = Backoff(base=0.5, cap=10.0, rng=rng)
    for _ in range(5):
        backoff.next_delay()

    backoff.reset()
    after = [backoff.next_delay() for _ in range(3)]

    assert rng.ranges[5:] == [(0.0, 0.5), (0.0, 1.0), (0.0, 2.0)]
    assert all(0.0 <= d <= hi for d, (_, hi) in zip(after, rng.ranges[5:], strict=True))


def test_after_reset_every_first_delay_is_within_the_first_cap() -> None:
    firsts = []
    for seed in range(500):
        backoff = Backoff(base=0.1, cap=30.0, rng=random.Random(seed))
        for _ in range(9):
            backoff.next_delay()  # cap now 25.6
        backoff.reset()
        firsts.append(backoff.next_delay())

    assert all(0.0 <= d <= 0.1 for d in firsts)


def test_the_same_seed_gives_the_same_delays() -> None:
    one = Backoff(0.2, 5.0, rng=random.Random(42))
    two = Backoff(0.2, 5.0, rng=random.Random(42))

    assert [one.next_delay() for _ in range(10)] == [two.next_delay() for _ in range(10)]


def test_without_a_random_source_delays_still_stay_within_their_caps() -> None:
    backoffs = [Backoff(0.1, 1.0) for _ in range(300)]

    for n in range(1, 8):
        limit = min(1.0, 0.1 * 2 ** (n - 1))
        assert all(0.0 <= b.next_delay() <= limit for b in backoffs)


def test_a_max_below_the_first_value_caps_at_the_first_value() -> None:
    rng = RecordingRandom()
    backoff = Backoff(base=2.0, cap=0.5, rng=rng)

    for _ in range(3):
        backoff.next_delay()

    assert rng.ranges == [(0.0, 2.0)] * 3


def test_many_attempts_stay_at_the_max_without_overflow() -> None:
    rng = RecordingRandom()
    backoff = Backoff(base=0.1, cap=60.0, rng=rng)

    for _ in range(5000):
        delay = backoff.next_delay()

    assert rng.ranges[-1] == (0.0, 60.0)
    assert 0.0 <= delay <= 60.0 and math.isfinite(delay)


def test_a_zero_base_never_waits() -> None:
    backoff = Backoff(base=0.0, cap=0.0, rng=random.Random(3))

    assert [backoff.next_delay() for _ in range(5)] == [0.0] * 5


@pytest.mark.parametrize(("base", "cap"), [(-0.1, 1.0), (0.1, -1.0)])
def test_negative_settings_are_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        Backoff(base, cap)


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(0, 0.0), (1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (50, 3.0), (10_000, 3.0)],
)
def test_exponential_doubles_from_base_up_to_cap(attempt: int, expected: float) -> None:
    assert exponential(attempt, 0.5, 3.0) == expected


NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("0", 0.0),
        ("7", 7.0),
        (" 12 ", 12.0),
        ("Sun, 01 Mar 2026 12:00:30 GMT", 30.0),  # an HTTP-date 30 s ahead
        ("Sun, 01 Mar 2026 11:59:00 GMT", 0.0),  # in the past: at once
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),  # RFC 9110 §10.2.3: delay-seconds is an integer
    ],
)
def test_retry_after_is_read_as_seconds_or_http_date(
    header: str | None, seconds: float | None
) -> None:
    assert parse_retry_after(header, now=NOW) == seconds
