"""The file connector against a folder twin in a temporary directory."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import ClassVar

import pytest

from hub.connectors.base import Connector, Outcome
from hub.connectors.file import FileConnector, FileSettings
from hub.testing.conformance import ConformanceTwin, ConnectorConformance, make_outbound, started


class FolderTwin:
    """A partner that picks files up from a folder; the file name is the message id."""

    def __init__(self, root: Path) -> None:
        self.directory = root / "outbox"
        self._aside = root / "outbox.aside"

    def _files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(
            (p for p in self.directory.iterdir() if not p.name.endswith(".part")),
            key=lambda p: p.stat().st_mtime_ns,
        )

    def received(self, message_id: str) -> list[bytes]:
        return [p.read_bytes() for p in self._files() if p.stem == message_id]

    def message_ids(self) -> list[str]:
        return [p.stem for p in self._files()]

    def fail_transiently(self) -> None:
        # A regular file where the folder should be: nothing can be written under it,
        # even by root, until the folder is back.
        if self.directory.is_dir():
            self.directory.rename(self._aside)
        self.directory.write_bytes(b"")

    def refuse_permanently(self) -> None:
        raise NotImplementedError("a folder never refuses a message for good")

    def heal(self) -> None:
        if self.directory.is_file():
            self.directory.unlink()
        if self._aside.is_dir():
            self._aside.rename(self.directory)

    def stop(self) -> None:
        self.fail_transiently()

    def restart(self) -> None:
        self.heal()


@pytest.fixture
def folder(tmp_path: Path) -> FolderTwin:
    return FolderTwin(tmp_path)


class TestFileConformance(ConnectorConformance):
    not_applicable: ClassVar[Mapping[str, str]] = {
        "permanent": "a folder has no way to refuse a message for good; every write error "
        "(full disk, missing mount) may pass, so all are transient",
    }

    @pytest.fixture
    def twin(self, folder: FolderTwin) -> ConformanceTwin:
        return folder

    @pytest.fixture
    def connector(self, loop_runner: asyncio.Runner, folder: FolderTwin) -> Iterator[Connector]:
        settings = FileSettings(directory=folder.directory)
        yield from started(loop_runner, FileConnector("outbox", settings))

    @pytest.fixture
    def unreachable_connector(
        self, loop_runner: asyncio.Runner, tmp_path: Path
    ) -> Iterator[Connector]:
        blocker = tmp_path / "a-regular-file"
        blocker.write_bytes(b"")
        settings = FileSettings(directory=blocker / "outbox")
        yield from started(loop_runner, FileConnector("gone", settings))


@pytest.mark.parametrize(
    ("content_type", "suffix"),
    [
        ("application/json", ".json"),
        ("application/fhir+json; charset=utf-8", ".json"),
        ("application/hl7-v2", ".hl7"),
        ("application/xml", ".xml"),
        ("application/x-unknown-thing", ".bin"),
    ],
)
def test_file_name_is_message_id_with_suffix_of_content_type(
    tmp_path: Path, content_type: str, suffix: str
) -> None:
    connector = FileConnector("outbox", FileSettings(directory=tmp_path / "out", fsync=False))
    message = make_outbound(content_type=content_type, payload=b"MSH|^~\\&|")
    result = asyncio.run(connector.send(message))
    assert result.outcome is Outcome.DELIVERED
    written = tmp_path / "out" / f"{message.message_id}{suffix}"
    assert result.response == str(written)
    assert written.read_bytes() == b"MSH|^~\\&|"


def test_retry_overwrites_and_leaves_no_partial_file(tmp_path: Path) -> None:
    connector = FileConnector("outbox", FileSettings(directory=tmp_path))
    first = make_outbound(payload=b'{"v":1}')
    again = make_outbound(first.message_id, payload=b'{"v":1}', attempt=2)

    async def both() -> list[Outcome]:
        return [(await connector.send(m)).outcome for m in (first, again)]

    assert asyncio.run(both()) == [Outcome.DELIVERED, Outcome.DELIVERED]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{first.message_id}.json"]


def test_unwritable_folder_is_transient_io(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    connector = FileConnector("outbox", FileSettings(directory=blocker / "sub"))
    result = asyncio.run(connector.send(make_outbound()))
    assert (result.outcome, result.error_class) == (Outcome.TRANSIENT, "io")
