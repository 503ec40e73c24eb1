"""Log lines carry no patient data, even when an exception's message quotes some."""

from __future__ import annotations

import logging

import orjson

from hub.logs import JsonFormatter


def _record_with(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except type(exc):
        import sys

        return logging.LogRecord(
            "hub.test", logging.ERROR, __file__, 1, "delivery %s failed", (42,), sys.exc_info()
        )


def test_an_exception_is_logged_by_type_and_place_never_by_message() -> None:
    try:
        try:
            raise KeyError("王建国 120105195803120039")
        except KeyError as inner:
            raise ValueError("patient 王建国 phone 13820000001") from inner
    except ValueError as exc:
        record = _record_with(exc)
    line = JsonFormatter().format(record)
    entry = orjson.loads(line)
    assert entry["msg"] == "delivery 42 failed"
    assert entry["level"] == "error"
    assert "builtins.ValueError" in entry["exc"]
    assert "caused by builtins.KeyError" in entry["exc"]
    assert "test_logs.py" in entry["exc"]
    for secret in ("王建国", "120105195803120039", "13820000001"):
        assert secret not in line


def test_database_errors_do_not_quote_parameters(tmp_path: object) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from hub.store.database import make_engine

    engine = make_engine(f"sqlite:///{tmp_path}/t.db")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id TEXT PRIMARY KEY)"))
        conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": "王建国"})
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": "王建国"})
    except IntegrityError as exc:
        assert "王建国" not in str(exc)
    else:
        raise AssertionError("the duplicate insert should have failed")
    finally:
        engine.dispose()
