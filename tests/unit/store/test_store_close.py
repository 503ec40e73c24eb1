"""Closing the store while a call still holds a connection (a thread the caller stopped
waiting for: a cancelled request, a listener's rejected-message write)."""

from __future__ import annotations

from hub.store.store import Store


def test_a_connection_returned_after_close_is_closed_not_left_to_the_collector(
    database_url: str,
) -> None:
    store = Store.open(database_url, migrate=True)
    conn = store.engine.connect()
    dbapi = conn.connection.dbapi_connection
    store.close()
    conn.close()  # returned to a pool the store disposed of
    assert dbapi is not None
    # psycopg: ``closed``; sqlite3: any use of a closed connection raises.
    if hasattr(dbapi, "closed"):
        assert dbapi.closed
    else:
        try:
            dbapi.cursor()
        except Exception as exc:  # sqlite3.ProgrammingError
            assert "closed" in str(exc)
        else:
            raise AssertionError("the SQLite connection is still open")
