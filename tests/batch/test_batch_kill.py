"""Kill test: SIGTERM mid-stream, and every row put is in the database.

A child process streams rows through a batch writer into SQLite with
``install_signal_handlers`` installed; the test sends it SIGTERM while rows
are flowing.  The child must exit 0 after draining, and the table must hold
exactly the rows the writer accepted: 0, 1, 2, ... with no gap and no double.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("batch_child.py")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_sigterm_mid_stream_flushes_every_row_put(mode: str, tmp_path: Path) -> None:
    db = tmp_path / "kill.db"
    report_path = tmp_path / "report.json"
    child = subprocess.Popen(
        [sys.executable, str(CHILD), mode, str(db), str(report_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # EOF (a crash) ends this too
        assert line.strip() == "streaming", child.stderr.read() if child.stderr else line
        os.kill(child.pid, signal.SIGTERM)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0, err
    assert "finished without a signal" not in out, "SIGTERM came too late to test anything"

    report = json.loads(report_path.read_text())
    accepted = report["items_in"]
    assert report["closed"]
    assert report["pending"] == 0
    assert report["dead_lettered"] == 0
    # The child counts a put once it returns; a signal may end put() right after
    # the writer has taken the item, so the writer's count is the truth.
    assert report["put"] in (accepted, accepted - 1)
    assert report["written"] == accepted

    with sqlite3.connect(db) as conn:
        rows = [seq for (seq,) in conn.execute("SELECT seq FROM events ORDER BY rowid")]
    conn.close()
    assert rows == list(range(accepted)), "rows lost, doubled or reordered"
    assert accepted > 3_000


FORGOTTEN = """
import asyncio, sys
from botscale import AsyncBatchWriter, BatchWriter
from botscale.sinks import SQLiteSink

db, mode = sys.argv[1], sys.argv[2]
sink = SQLiteSink(db, "events", ["seq"])
if mode == "sync":
    writer = BatchWriter(sink, max_batch=1000, max_delay=60.0)
    for i in range(2500):
        writer.put((i,))
else:
    async def main():
        global writer
        writer = AsyncBatchWriter(sink, max_batch=1000, max_delay=60.0)
        for i in range(2500):
            await writer.put((i,))
    asyncio.run(main())
print("leaving without close()", flush=True)
"""


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_writer_nobody_closed_is_drained_at_exit(mode: str, tmp_path: Path) -> None:
    db = tmp_path / "forgotten.db"
    out = subprocess.run(
        [sys.executable, "-c", FORGOTTEN, str(db), mode],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    with sqlite3.connect(db) as conn:
        rows = [seq for (seq,) in conn.execute("SELECT seq FROM events ORDER BY rowid")]
    conn.close()
    assert rows == list(range(2500))
