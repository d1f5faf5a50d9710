"""examples/core_demo.py (what `nox -s demo` runs) finishes quickly and says what it did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "examples" / "core_demo.py"


def test_core_demo_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "ok, ok, ok, ok, ok, wait 2.0s, wait 2.0s, wait 2.0s" in out
    assert "inserted 'answer B from user 42'" in out
    assert "fails at once with Too Many Requests" in out
    assert "never more than 8 calls at once" in out
    assert "chat 0: updates [0, 3, 6, 9]" in out
    assert "locks kept for idle chats: 0" in out
