"""Message ids: 20 Crockford base32 characters (fits MSH-10), sorted by creation time."""

from __future__ import annotations

import os
import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.ids import new_id, sibling_id

CROCKFORD = re.compile(r"^[0-9A-HJKMNP-TV-Z]{20}$")


def test_ids_are_20_crockford_characters() -> None:
    ids = [new_id() for _ in range(2000)]
    assert all(CROCKFORD.match(i) for i in ids), [i for i in ids if not CROCKFORD.match(i)][:3]
    assert not set("ILOU").intersection("".join(ids))


def test_ids_are_unique_within_one_millisecond() -> None:
    now = 1_795_600_000.123
    ids = {new_id(now) for _ in range(5000)}
    assert len(ids) == 5000
    assert len({i[:9] for i in ids}) == 1, "the time part is shared within a millisecond"


def test_seeding_the_random_module_does_not_repeat_ids() -> None:
    random.seed(7)
    first = new_id(0.0)
    random.seed(7)
    assert new_id(0.0) != first


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then out without running any cleanup
        os.write(write_end, new_id(0.0).encode())
        os._exit(0)
    os.close(write_end)
    try:
        child = os.read(read_end, 20).decode()
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert len(child) == 20
    assert new_id(0.0) != child  # without reseeding, both would draw the same bits


def test_ids_sort_by_time_across_milliseconds() -> None:
    start = 1_795_600_000.0
    times = [start + step / 1000 for step in range(0, 3000, 7)]
    ids = [new_id(t) for t in times]
    assert ids == sorted(ids)
    assert new_id(start) < new_id(start + 0.001)
    assert new_id(start + 86_400) > new_id(start)


def test_the_time_part_encodes_milliseconds() -> None:
    ident = new_id(0.0)
    assert ident[:9] == "000000000"
    value = 0
    for char in new_id(1.0)[:10]:
        value = value * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(char)
    assert value >> 2 == 1000  # 48 time bits in the first 50: the top 10 chars hold ms << 2


@given(st.integers(min_value=0, max_value=2**48 - 1))
def test_sibling_ids_are_distinct_stable_and_fit_msh10(ms: int) -> None:
    original = new_id(ms / 1000)
    siblings = [sibling_id(original, n) for n in range(1, 1024)]
    assert len({original, *siblings}) == 1024
    assert all(len(s) == 20 and s[:18] == original[:18] for s in siblings)
    assert sibling_id(original, 5) == siblings[4]


def test_sibling_ids_of_foreign_ids_and_bad_n() -> None:
    assert sibling_id("G2CD946D3C288CA793A0", 1) != "G2CD946D3C288CA793A0"
    assert sibling_id("MSG-001", 1) != sibling_id("MSG-001", 2)
    with pytest.raises(ValueError, match="1 to 1023"):
        sibling_id("G2CD946D3C288CA793A0", 0)
