"""Compact, time-ordered identifiers.

Message ids must fit HL7 v2.5.1 MSH-10 (20 characters) and sort by creation time so
the message browser and logs read in order.
"""

from __future__ import annotations

import os
import time

__all__ = ["new_id", "sibling_id"]

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


def sibling_id(message_id: str, n: int) -> str:
    """The ``n``-th (1 to 1,023) id derived from ``message_id``, for the further messages
    of one delivery (an ADT per patient): its last two characters shifted by ``n`` in
    base 32. Stable for the delivery, distinct from it and from each other, still 20
    characters; sharing the first 18 characters (time and 42 random bits) with the
    original, it cannot meet another message's id unless two ids drawn in the same
    millisecond share 42 random bits.
    """
    if not 0 < n < 1024:
        raise ValueError(f"n must be 1 to 1023, not {n}")
    head, tail = message_id[:-2], message_id[-2:].rjust(2, "0")
    value = sum(_value(c) << (5 * (1 - i)) for i, c in enumerate(tail))
    value = (value + n) % 1024
    return head + _ALPHABET[value >> 5] + _ALPHABET[value & 31]


def _value(char: str) -> int:
    index = _ALPHABET.find(char)
    return index if index >= 0 else ord(char) % 32
