"""Retry policy as an object: exponential backoff with jitter on a persisted schedule."""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["RetryPolicy"]


class RetryPolicy(BaseModel):
    """When to try a failed delivery again, and when to give up and park it as dead."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    initial_delay: float = Field(default=1.0, gt=0, description="Seconds before the 2nd attempt.")
    multiplier: float = Field(default=2.0, ge=1, description="Growth of the delay per attempt.")
    max_delay: float = Field(default=300.0, gt=0, description="Upper bound of one delay.")
    max_attempts: int = Field(default=10, ge=1, description="Attempts before the delivery is dead.")
    jitter: float = Field(
        default=0.2, ge=0, le=1, description="Fraction of each delay randomised, so retries spread."
    )

    @model_validator(mode="after")
    def _bounds(self) -> RetryPolicy:
        if self.max_delay < self.initial_delay:
            raise ValueError("max_delay must be at least initial_delay")
        return self

    def delay_after(
        self,
        attempts: int,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds to wait after ``attempts`` failed attempts; None once the schedule is spent.

        A partner's Retry-After is honoured when it asks for longer than the schedule, up
        to ``max_delay``. Jitter never takes a delay above ``max_delay``.
        """
        if attempts >= self.max_attempts:
            return None
        try:
            grown = self.initial_delay * self.multiplier ** (attempts - 1)
        except OverflowError:  # a long schedule (2.0 ** 1024 overflows a float): at the cap
            grown = self.max_delay
        base = min(self.max_delay, grown)
        spread = base * self.jitter
        delay = min(self.max_delay, base - spread + (rng or random).random() * 2 * spread)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_delay))
        return max(0.0, delay)
