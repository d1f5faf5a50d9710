"""Three bot processes broadcast through one Redis flood budget against the simulator.

The simulator enforces Telegram's limits (30 messages/s per bot) with real 429
answers.  Each process runs its own ``FloodControl`` on a shared
``RedisFloodBudget``: together they must finish a broadcast to 300 users with
no 429 at all, and at least 90% of the overall rate.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from botscale.testing import SimulatorThread

pytestmark = [pytest.mark.redis, pytest.mark.slow]

BROADCASTER = Path(__file__).with_name("broadcaster.py")
USERS = 300
INSTANCES = 3
TELEGRAM_RATE = 30.0


def test_three_instances_broadcast_to_300_users_without_a_429(redis_url: str, prefix: str) -> None:
    with SimulatorThread() as st:
        chat_ids = [st.user().id for _ in range(USERS)]
        send_url = st.sim.api_url("sendMessage")
        shares = [chat_ids[i::INSTANCES] for i in range(INSTANCES)]
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(BROADCASTER),
                    redis_url,
                    prefix,
                    send_url,
                    ",".join(map(str, ids)),
                    repr(1 / INSTANCES),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for ids in shares
        ]
        try:
            for child in children:
                assert child.stdout is not None
                assert child.stdout.readline().strip() == "ready"
            for child in children:
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            reports = [child.communicate(timeout=120)[0].split() for child in children]
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        assert all(child.returncode == 0 for child in children)
        stats = st.call(lambda: st.sim.stats)
        counts = st.call(lambda: [st.sim.sent_count(c) for c in chat_ids])

    sent = sum(int(r[0]) for r in reports)
    elapsed = max(float(r[2]) for r in reports) - min(float(r[1]) for r in reports)
    assert stats.rate_limited == 0, stats.rate_limited_by_chat
    assert sent == USERS
    assert stats.messages_sent == USERS
    assert counts == [1] * USERS
    rate = USERS / elapsed
    assert rate >= 0.9 * TELEGRAM_RATE, f"{rate:.1f} messages/s over {elapsed:.2f} s"
