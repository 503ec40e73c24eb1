"""IdleDeadline and fail_reads: deadlines that fail a stream reader's wait for data."""

from __future__ import annotations

import asyncio

import pytest

from hub.deadlines import IdleDeadline, fail_reads


async def _reader_and_feeder() -> tuple[asyncio.StreamReader, asyncio.AbstractEventLoop]:
    return asyncio.StreamReader(), asyncio.get_running_loop()


def test_fail_reads_fails_a_waiting_read_and_every_later_one() -> None:
    async def scenario() -> None:
        reader, loop = await _reader_and_feeder()
        loop.call_later(0.01, fail_reads, reader)
        with pytest.raises(TimeoutError):
            await reader.read(10)
        reader.feed_data(b"late")
        with pytest.raises(TimeoutError):
            await reader.read(10)  # out of step: the data that came late is not handed out

    asyncio.run(scenario())


def test_an_idle_wait_longer_than_the_deadline_fails() -> None:
    async def scenario() -> float:
        reader, loop = await _reader_and_feeder()
        idle = IdleDeadline(loop, reader, 0.05)
        started = loop.time()
        idle.waiting()
        try:
            with pytest.raises(TimeoutError):
                await reader.read(10)
        finally:
            idle.cancel()
        return loop.time() - started

    assert asyncio.run(scenario()) >= 0.045


def test_time_spent_handling_data_does_not_count() -> None:
    """Reads that each wait less than the deadline never fail, however long the
    handling between them takes (here 3 x 40 ms against a 50 ms deadline)."""

    async def scenario() -> list[bytes]:
        reader, loop = await _reader_and_feeder()
        idle = IdleDeadline(loop, reader, 0.05)
        got = []
        try:
            for n in range(3):
                loop.call_later(0.03, reader.feed_data, str(n).encode())
                idle.waiting()
                got.append(await reader.read(10))
                idle.received()
                await asyncio.sleep(0.04)  # handling: not waiting
        finally:
            idle.cancel()
        return got

    assert asyncio.run(scenario()) == [b"0", b"1", b"2"]


def test_the_deadline_counts_from_the_latest_wait() -> None:
    """A timer armed by an earlier wait fires early for a later one: it re-arms."""

    async def scenario() -> tuple[bytes, bool]:
        reader, loop = await _reader_and_feeder()
        idle = IdleDeadline(loop, reader, 0.06)
        try:
            idle.waiting()  # arms the timer for t=60 ms
            loop.call_later(0.01, reader.feed_data, b"a")
            first = await reader.read(10)
            idle.received()
            await asyncio.sleep(0.03)
            idle.waiting()  # waits from t≈40 ms: due at ≈100, not 60
            loop.call_later(0.04, reader.feed_data, b"b")  # arrives at ≈80 ms
            second = await reader.read(10)
            idle.received()
            return first + second, reader.exception() is None
        finally:
            idle.cancel()

    assert asyncio.run(scenario()) == (b"ab", True)
