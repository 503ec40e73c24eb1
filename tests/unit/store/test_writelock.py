"""The SQLite write lock excludes writers across threads and across processes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hub.store.writelock import WriteLock

HOLDER = """
import sys, time
from pathlib import Path
from hub.store.writelock import WriteLock
lock = WriteLock(Path(sys.argv[1]))
with lock:
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    Path(sys.argv[3]).write_text(str(time.monotonic()))
"""


def test_a_writer_in_another_process_waits_for_the_holder(tmp_path: Path) -> None:
    database = tmp_path / "hub.db"
    released_file = tmp_path / "released"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(database), "0.4", str(released_file)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        lock = WriteLock(database)
        try:
            with lock:
                got_it = time.monotonic()
            assert released_file.exists(), "took the lock while another process held it"
            assert got_it >= float(released_file.read_text())
        finally:
            lock.close()
    finally:
        holder.communicate(timeout=10)
    assert holder.returncode == 0
    assert lock.path == tmp_path / "hub.db-hub.lock"


@pytest.mark.parametrize("on_disk", [True, False], ids=["file", "in-memory"])
def test_threads_of_one_process_take_turns(tmp_path: Path, on_disk: bool) -> None:
    lock = WriteLock(tmp_path / "hub.db" if on_disk else None)
    assert (lock.path is not None) == on_disk
    inside = 0
    most = 0
    guard = threading.Lock()

    def writer() -> None:
        nonlocal inside, most
        for _ in range(200):
            with lock:
                with guard:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lock.close()
    assert most == 1
