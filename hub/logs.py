"""Structured logs: one JSON object per line.

Log lines name ids (incident, delivery, message), never patient names, phone or ID
numbers: the engine logs no event content, and connectors log no payloads.
"""

from __future__ import annotations

import logging
import sys
import traceback
from datetime import UTC, datetime

import orjson

__all__ = ["JsonFormatter", "configure"]

# Libraries whose INFO lines are per-request noise (and may carry URLs with ids).
_QUIET = ("httpx", "httpcore", "alembic", "uvicorn.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "t": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and record.exc_info[1] is not None:
            entry["exc"] = _exception_without_message(record.exc_info[1])
        return orjson.dumps(entry).decode()


def _exception_without_message(exc: BaseException) -> str:
    """Type and stack of an exception chain, never its message.

    Messages can quote data (a validation error its input, a database error its
    parameters): the full error belongs in the attempt record, not in the log.
    """
    parts: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(parts) < 5:
        frames = traceback.extract_tb(current.__traceback__)
        where = " < ".join(
            f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in frames[::-1]
        )
        parts.append(f"{type(current).__module__}.{type(current).__qualname__} at {where}")
        current = current.__cause__ or current.__context__
    return " | caused by ".join(parts)


def configure(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
