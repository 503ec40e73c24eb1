"""Compact, time-ordered identifiers.

Message ids must fit HL7 v2.5.1 MSH-10 (20 characters) and sort by creation time so
the message browser and logs read in order.
"""

from __future__ import annotations

import os
import random
import time

__all__ = ["new_id", "sibling_id"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)  # 10 bits -> 2 characters
_SHIFTS = tuple(range(90, -1, -10))
# Ids need to be unique, not secret: a generator of our own, seeded from os.urandom (and
# again in a forked child), costs a third of an os.urandom call, and nobody else seeding
# the random module (tests do) can make it repeat ids.
_random = random.Random()
os.register_at_fork(after_in_child=_random.seed)
_bits = _random.getrandbits


def new_id(now: float | None = None) -> str:
    """20 characters: 48-bit milliseconds then 52 random bits."""
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    value = (ms << 52) | _bits(52)
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


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
