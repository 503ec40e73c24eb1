"""The decoded-body cache: one object per event id while held, least recently used dropped."""

from __future__ import annotations

from hub.store.bodies import BodyCache


def test_a_held_body_is_decoded_once_and_returned_as_the_same_object() -> None:
    cache = BodyCache(4)
    body = cache.decoded("e1", b'{"n": 1}')
    assert body == {"n": 1}
    assert cache.decoded("e1", b'{"n": "not read again"}') is body


def test_histories_decode_only_what_is_not_held_and_keep_the_order() -> None:
    cache = BodyCache(4)
    held_body = cache.decoded("e2", b'{"n": 2}')
    held = cache.held(["e1", "e2", "e3"])
    assert held == {"e2": held_body}
    bodies = cache.in_order(["e3", "e2", "e1"], held, {"e1": b'{"n": 1}', "e3": '{"n": 3}'})
    assert bodies == [{"n": 3}, {"n": 2}, {"n": 1}]
    assert bodies[1] is held_body
    assert cache.held(["e1", "e3"]) == {"e1": {"n": 1}, "e3": {"n": 3}}


def test_the_least_recently_used_body_is_dropped_beyond_the_size() -> None:
    cache = BodyCache(2)
    cache.decoded("e1", b"{}")
    cache.decoded("e2", b"{}")
    cache.held(["e1"])  # used: e2 is now the oldest
    cache.decoded("e3", b"{}")
    assert set(cache.held(["e1", "e2", "e3"])) == {"e1", "e3"}


def test_an_empty_body_held_is_returned_as_held() -> None:
    cache = BodyCache(4)
    empty = cache.decoded("e0", b"{}")
    assert cache.in_order(["e0"], cache.held(["e0"]), {})[0] is empty
