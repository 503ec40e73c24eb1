"""Compact, time-ordered identifiers.

Message ids must fit HL7 v2.5.1 MSH-10 (20 characters) and sort by creation time so
the message browser and logs read in order.
"""

from __future__ import annotations

import os
import time

__all__ = ["new_id"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U


def new_id(now: float | None = None) -> str:
    """20 characters: 48-bit milliseconds then 52 random bits."""
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    value = (ms << 52) | (int.from_bytes(os.urandom(7), "big") >> 4)
    chars = []
    for _ in range(20):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))
