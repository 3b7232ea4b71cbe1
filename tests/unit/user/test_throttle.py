"""Failed-login throttle: growing delay, bounded lockout, reset on success."""

from __future__ import annotations

from authbus.user.throttle import LoginThrottle
from tests.unit.user.conftest import FakeClock


def fail(t: LoginThrottle, n: int, user: str = "alice", addr: str = "10.0.0.1") -> None:
    for _ in range(n):
        t.record_failure(user, addr)


def test_free_attempts_are_not_delayed(throttle: LoginThrottle) -> None:
    fail(throttle, 3)
    assert throttle.retry_after("alice", "10.0.0.1") == 0


def test_delay_doubles_after_the_free_attempts(throttle: LoginThrottle, clock: FakeClock) -> None:
    fail(throttle, 4)
    assert throttle.retry_after("alice", "10.0.0.1") == 1
    clock.advance(1)
    fail(throttle, 1)
    assert throttle.retry_after("alice", "10.0.0.1") == 2
    clock.advance(2)
    fail(throttle, 1)
    assert throttle.retry_after("alice", "10.0.0.1") == 4


def test_lockout_is_bounded_by_max_delay(throttle: LoginThrottle, clock: FakeClock) -> None:
    fail(throttle, 50)
    assert throttle.retry_after("alice", "10.0.0.1") == 60
    clock.advance(60)
    assert throttle.retry_after("alice", "10.0.0.1") == 0


def test_other_addresses_and_usernames_are_not_affected(throttle: LoginThrottle) -> None:
    fail(throttle, 10)
    assert throttle.retry_after("alice", "10.0.0.2") == 0
    assert throttle.retry_after("bob", "10.0.0.1") == 0


def test_username_case_does_not_escape_the_throttle(throttle: LoginThrottle) -> None:
    fail(throttle, 10, user="ALICE")
    assert throttle.retry_after("alice", "10.0.0.1") > 0


def test_success_resets(throttle: LoginThrottle) -> None:
    fail(throttle, 10)
    throttle.record_success("alice", "10.0.0.1")
    assert throttle.retry_after("alice", "10.0.0.1") == 0


def test_failures_are_forgotten_after_a_quiet_period(
    throttle: LoginThrottle, clock: FakeClock
) -> None:
    fail(throttle, 3)
    clock.advance(121)
    fail(throttle, 1)
    assert throttle.retry_after("alice", "10.0.0.1") == 0


def test_memory_is_bounded(clock: FakeClock) -> None:
    t = LoginThrottle(free_attempts=0, base_delay_s=1, max_delay_s=10, max_entries=5, clock=clock)
    for i in range(20):
        t.record_failure(f"user{i}", None)
    assert len(t._entries) == 5
    assert t.retry_after("user19", None) > 0


def test_attempts_in_flight_count_once_free_attempts_are_used(throttle: LoginThrottle) -> None:
    assert [throttle.begin("alice", "a") for _ in range(3)] == [0, 0, 0]
    # Three guesses running use up the free attempts: a fourth must wait for them.
    assert throttle.begin("alice", "a") == 1
    for _ in range(3):
        throttle.record_failure("alice", "a")
    assert throttle.begin("alice", "a") == 0
    assert throttle.begin("alice", "a") == 1


def test_abandoned_attempts_free_their_slot(throttle: LoginThrottle) -> None:
    for _ in range(3):
        assert throttle.begin("alice", "a") == 0
    for _ in range(3):
        throttle.abandon("alice", "a")
    assert throttle.begin("alice", "a") == 0


def test_success_with_others_in_flight_keeps_their_slots(throttle: LoginThrottle) -> None:
    for _ in range(3):
        throttle.begin("alice", "a")
    throttle.record_success("alice", "a")
    assert throttle._entries[("alice", "a")].in_flight == 2
    assert throttle.retry_after("alice", "a") == 0
