"""Structured logs: one JSON object per line.

Log lines name ids (incident, delivery, message), never patient names, phone or ID
numbers: the engine logs no event content, and connectors log no payloads.
"""

from __future__ import annotations

import logging
import sys
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
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
