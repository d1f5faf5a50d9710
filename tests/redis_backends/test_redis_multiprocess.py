"""Three processes hammer one bucket through Redis: together they get what one bucket allows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.redis

HAMMER = Path(__file__).with_name("hammer.py")
PROCESSES = 3
DURATION = 1.0
SLACK = 0.05  # seconds: a request sent just before the stop is decided just after it


@pytest.mark.parametrize(
    ("mode", "burst", "per_second"),
    [("limiter", 5, 100.0), ("budget", 1, 30.0)],
    ids=["limiter-100/s", "flood-budget-30/s"],
)
def test_three_processes_share_one_bucket(
    redis_url: str, prefix: str, mode: str, burst: int, per_second: float
) -> None:
    children = [
        subprocess.Popen(
            [sys.executable, str(HAMMER), mode, redis_url, prefix, repr(DURATION)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        for child in children:  # start them together
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        reports = [child.communicate(timeout=60)[0].split() for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert all(child.returncode == 0 for child in children)
    granted = [int(r[0]) for r in reports]
    window = max(float(r[2]) for r in reports) - min(float(r[1]) for r in reports)
    total = sum(granted)
    one_bucket = burst + (window + SLACK) * per_second
    assert total <= one_bucket, (granted, window, one_bucket)
    # Not vacuous: together they did use the bucket (each alone asks thousands of times).
    assert total >= 0.5 * (burst + DURATION * per_second), (granted, window)
    assert all(n > 0 for n in granted), granted
