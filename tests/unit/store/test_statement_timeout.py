"""A worker's PostgreSQL statements fail after ``statement_timeout`` instead of hanging."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from hub.store.store import Store


@pytest.mark.postgres
def test_a_statement_the_server_holds_fails_after_the_timeout(postgres_url: str) -> None:
    schema = make_url(postgres_url).query["options"]
    assert isinstance(schema, str) and schema.startswith("-csearch_path=")
    store = Store.open(postgres_url, statement_timeout=0.2)
    try:
        with store.engine.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "200ms"
            # The URL's own options (the test schema) still apply.
            assert conn.execute(text("SHOW search_path")).scalar_one() == schema.split("=")[1]
            with pytest.raises(OperationalError, match="statement timeout"):
                conn.execute(text("SELECT pg_sleep(2)"))
    finally:
        store.close()


@pytest.mark.postgres
def test_without_a_timeout_the_server_default_applies(postgres_url: str) -> None:
    store = Store.open(postgres_url)
    try:
        with store.engine.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "0"
    finally:
        store.close()
