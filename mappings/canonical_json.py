"""The canonical event itself as JSON: for webhooks, debugging and downstream hubs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from hub.registry import register
from mappings.base import MappingContext, Payload

__all__ = ["canonical_json"]


@register("mapping", "canonical-json")
def canonical_json(event: Mapping[str, Any], ctx: MappingContext) -> Payload:
    """Wrap the event with the delivery's stable message id so receivers can dedupe."""
    document = {"message_id": ctx.message_id, "event": event}
    return Payload(orjson.dumps(document, option=orjson.OPT_SORT_KEYS), "application/json")
