"""File connector: writes each message to a folder, for debugging and hand-offs.

The file is named by the stable message id and written atomically, so a retried
delivery overwrites its own file instead of adding a second one.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
from pathlib import Path

from pydantic import Field

from hub.connectors.base import Connector, ConnectorSettings, Outbound, Outcome, SendResult
from hub.registry import register

__all__ = ["FileConnector", "FileSettings"]


class FileSettings(ConnectorSettings):
    directory: Path = Field(description="Folder the messages are written to; created if missing.")
    fsync: bool = Field(default=True, description="Flush each file to disk before reporting it.")


def _extension(content_type: str) -> str:
    base = content_type.split(";", 1)[0].strip()
    # Fixed for the types the hub sends: mimetypes depends on the host's /etc/mime.types
    # (which maps application/xml to .xsl on some systems).
    special = {
        "application/hl7-v2": ".hl7",
        "application/fhir+json": ".json",
        "application/json": ".json",
        "application/xml": ".xml",
        "application/fhir+xml": ".xml",
        "text/xml": ".xml",
        "text/plain": ".txt",
    }
    return special.get(base) or mimetypes.guess_extension(base) or ".bin"


@register("connector", "file")
class FileConnector(Connector):
    settings_model = FileSettings
    settings: FileSettings

    async def send(self, message: Outbound) -> SendResult:
        try:
            path = await asyncio.to_thread(self._write, message)
        except OSError as exc:
            return SendResult(Outcome.TRANSIENT, error=str(exc), error_class="io")
        return SendResult(Outcome.DELIVERED, status="written", response=str(path))

    def _write(self, message: Outbound) -> Path:
        directory = self.settings.directory
        directory.mkdir(parents=True, exist_ok=True)
        final = directory / f"{message.message_id}{_extension(message.content_type)}"
        partial = final.with_name(final.name + ".part")
        with open(partial, "wb") as handle:
            handle.write(message.payload)
            if self.settings.fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(partial, final)
        return final
