"""The store's raw transactions: each hot thread keeps one connection, out of the pool."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from hub.store.driver import MAX_KEPT, Driver
from hub.store.store import Store


def _is_closed(dbapi: Any) -> bool:
    if hasattr(dbapi, "closed"):  # psycopg
        return bool(dbapi.closed)
    try:  # sqlite3: any use of a closed connection raises
        dbapi.cursor()
    except Exception as exc:
        return "closed" in str(exc)
    return False


def _connection_of(driver: Driver) -> Any:
    with driver.transaction(read_only=True) as cursor:
        return cursor.connection  # the DB-API connection (sqlite3 and psycopg)


@pytest.fixture
def store(database_url: str) -> Any:
    opened = Store.open(database_url, migrate=True)
    yield opened
    opened.close()


def test_a_thread_keeps_its_connection_and_the_pool_stays_free(store: Store) -> None:
    driver = store._driver
    first = _connection_of(driver)
    assert _connection_of(driver) is first
    assert store.engine.pool.checkedout() == 0  # kept connections are detached
    other: list[Any] = []
    thread = threading.Thread(target=lambda: other.append(_connection_of(driver)))
    thread.start()
    thread.join()
    assert other[0] is not first


def test_an_error_drops_the_kept_connection_and_the_next_transaction_works(
    store: Store,
) -> None:
    driver = store._driver
    first = _connection_of(driver)
    with pytest.raises(RuntimeError), driver.transaction() as cursor:
        cursor.execute("SELECT 1")
        raise RuntimeError("the caller failed inside the transaction")
    assert _is_closed(first)
    second = _connection_of(driver)
    assert second is not first and not _is_closed(second)


def test_threads_beyond_the_kept_ones_use_the_pool(store: Store) -> None:
    driver = store._driver
    seen: list[Any] = []
    hold = threading.Barrier(MAX_KEPT + 2)

    def run() -> None:
        seen.append(_connection_of(driver))
        hold.wait(10)  # all alive at once, so no thread id is reused

    threads = [threading.Thread(target=run) for _ in range(MAX_KEPT + 1)]
    for thread in threads:
        thread.start()
    hold.wait(10)
    for thread in threads:
        thread.join()
    assert len(seen) == MAX_KEPT + 1
    assert len(driver._kept) == MAX_KEPT
    assert sum(not _is_closed(c) for c in seen) >= MAX_KEPT  # the pooled one went back


def test_close_closes_the_kept_connections(database_url: str) -> None:
    store = Store.open(database_url, migrate=True)
    kept = _connection_of(store._driver)
    store.close()
    assert _is_closed(kept)
    # A call after close still works, on a pooled connection, as before.
    assert _connection_of(store._driver) is not kept
    store.close()
