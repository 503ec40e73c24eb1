"""Decoded event bodies by event id, shared between claims and incident histories.

An event's body never changes once stored, so it is decoded once while it stays among
the most recently used. A claim decodes its event here, so the history read for the
same delivery finds it; a history then reads only event ids, and bodies for those not
held. The same dict objects come back on every call, which lets a mapping's memo tell a
known history by identity. Callers read the dicts, never change them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

__all__ = ["BodyCache"]


class BodyCache:
    def __init__(self, size: int) -> None:
        self._size = size
        self._bodies: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def decoded(self, event_id: str, text: str | bytes) -> dict[str, Any]:
        """The body of ``event_id``, decoding ``text`` only when it is not held."""
        with self._lock:
            body = self._bodies.get(event_id)
            if body is not None:
                self._bodies.move_to_end(event_id)
                return body
        body = orjson.loads(text)
        return self._keep({event_id: body})[event_id]

    def held(self, event_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Those of ``event_ids`` held now (a snapshot: later evictions don't matter)."""
        out = {}
        with self._lock:
            bodies = self._bodies
            for event_id in event_ids:
                body = bodies.get(event_id)
                if body is not None:
                    bodies.move_to_end(event_id)
                    out[event_id] = body
        return out

    def in_order(
        self,
        event_ids: Sequence[str],
        held: Mapping[str, dict[str, Any]],
        texts: Mapping[str, str | bytes],
    ) -> list[dict[str, Any]]:
        """The bodies of ``event_ids`` in order: ``held`` ones, else decoded from ``texts``."""
        decoded = self._keep({i: orjson.loads(texts[i]) for i in event_ids if i not in held})
        return [held[i] if i in held else decoded[i] for i in event_ids]

    def _keep(self, new: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Hold ``new``; a body another thread decoded meanwhile wins, so it stays one object."""
        if not new:
            return new
        with self._lock:
            bodies = self._bodies
            for event_id, body in new.items():
                kept = bodies.setdefault(event_id, body)
                bodies.move_to_end(event_id)
                new[event_id] = kept
            while len(bodies) > self._size:
                bodies.popitem(last=False)
        return new
