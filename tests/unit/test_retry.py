"""The retry policy: exponential growth, a cap, bounded jitter, exhaustion, Retry-After."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from hub.retry import RetryPolicy


def test_delays_grow_by_the_multiplier_without_jitter() -> None:
    policy = RetryPolicy(initial_delay=1, multiplier=3, max_delay=1000, max_attempts=6, jitter=0)
    assert [policy.delay_after(n) for n in range(1, 6)] == [1, 3, 9, 27, 81]


def test_delays_stop_growing_at_the_cap() -> None:
    policy = RetryPolicy(initial_delay=2, multiplier=2, max_delay=10, max_attempts=9, jitter=0)
    assert [policy.delay_after(n) for n in range(1, 9)] == [2, 4, 8, 10, 10, 10, 10, 10]


def test_jitter_stays_within_its_bounds_and_spreads() -> None:
    policy = RetryPolicy(initial_delay=10, multiplier=2, max_delay=1000, jitter=0.2)
    rng = random.Random(20261125)
    for attempts, base in [(1, 10.0), (2, 20.0), (3, 40.0)]:
        delays = [policy.delay_after(attempts, rng=rng) for _ in range(500)]
        assert all(d is not None and base * 0.8 <= d <= base * 1.2 for d in delays)
        values = [d for d in delays if d is not None]
        assert max(values) - min(values) > base * 0.3, "jitter must actually spread retries"


def test_jitter_is_reproducible_with_a_seeded_random() -> None:
    policy = RetryPolicy(jitter=0.5)
    first = [policy.delay_after(n, rng=random.Random(7)) for n in range(1, 5)]
    second = [policy.delay_after(n, rng=random.Random(7)) for n in range(1, 5)]
    assert first == second


def test_jitter_never_exceeds_the_cap() -> None:
    policy = RetryPolicy(initial_delay=1, multiplier=2, max_delay=8, max_attempts=50, jitter=1)
    rng = random.Random(3)
    delays = [policy.delay_after(n, rng=rng) for n in range(4, 40) for _ in range(20)]
    assert max(d for d in delays if d is not None) <= 8
    assert min(d for d in delays if d is not None) >= 0


def test_a_spent_schedule_gives_none() -> None:
    policy = RetryPolicy(initial_delay=1, max_attempts=3, jitter=0)
    assert policy.delay_after(1) == 1
    assert policy.delay_after(2) == 2
    assert policy.delay_after(3) is None
    assert policy.delay_after(4) is None
    assert RetryPolicy(max_attempts=1).delay_after(1) is None


def test_a_long_schedule_does_not_overflow() -> None:
    policy = RetryPolicy(initial_delay=1, multiplier=2, max_delay=300, max_attempts=5000, jitter=0)
    assert policy.delay_after(1500) == 300


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        (30.0, 30.0),  # longer than the schedule: honoured
        (0.5, 2.0),  # shorter than the schedule: the schedule wins
        (0.0, 2.0),
        (10_000.0, 60.0),  # never beyond max_delay
        (None, 2.0),
    ],
)
def test_retry_after_is_honoured_when_longer(retry_after: float | None, expected: float) -> None:
    policy = RetryPolicy(initial_delay=1, multiplier=2, max_delay=60, jitter=0)
    assert policy.delay_after(2, retry_after=retry_after) == expected


def test_retry_after_does_not_extend_a_spent_schedule() -> None:
    assert RetryPolicy(max_attempts=2).delay_after(2, retry_after=5) is None


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"initial_delay": 0}, ("initial_delay",)),
        ({"multiplier": 0.5}, ("multiplier",)),
        ({"max_attempts": 0}, ("max_attempts",)),
        ({"jitter": 1.5}, ("jitter",)),
        ({"initial_delay": 10, "max_delay": 5}, ()),
        ({"backoff": "linear"}, ("backoff",)),
    ],
)
def test_invalid_policies_are_refused(fields: dict[str, object], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        RetryPolicy.model_validate(fields)
    assert [tuple(e["loc"]) for e in info.value.errors()] == [loc]
