"""The demo scenario end to end, at small scale: every check of ``nox -s demo`` must hold.

The quiz bot runs in its own process (``python -m examples.quizbot``)
against the simulator, exactly as in the demo; the checks compare what the
virtual users did with what the bot stored and sent.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.quizbot.demo import format_result, run_demo  # noqa: E402


@pytest.mark.slow
async def test_demo_scenario_at_small_scale(tmp_path: Path) -> None:
    plot = tmp_path / "latency.png"
    result = await run_demo(
        users=12,
        duration=6.0,
        ramp_steps=2,
        think=(1.0, 2.5),
        spam_presses=20,
        spam_rounds=2,
        spam_interval=4.0,
        stats_users=3,
        bot_env={
            "BOTSCALE_USER_RATE": "20/4s",
            "BOTSCALE_USER_BURST": "5",
            "BOTSCALE_BATCH_DELAY": "0.3",
        },
        workdir=str(tmp_path),
        plot=str(plot),
        say=lambda line: None,
    )
    text = format_result(result)

    # The database holds exactly the answers the users gave (by update id, user and verdict).
    db = result.database
    assert db.accepted > 12, text
    assert (db.stored, db.missing, db.extra, db.duplicates, db.wrong_verdicts) == (
        db.accepted,
        0,
        0,
        0,
        0,
    ), text
    # The impatient user was told to slow down once in each window, never more.
    assert result.spam.notices == [1, 1], text
    assert all(answered < 20 for answered in result.spam.answered), text
    # The broadcast reached every user, with no 429 from Telegram (the simulator).
    cast = result.broadcast
    assert cast.recipients == 12 + 2 + 3, text
    assert cast.reached == cast.recipients, text
    assert cast.rate_limited == 0, text
    assert f"{cast.recipients}/{cast.recipients} delivered" in cast.bot_summary, text
    assert result.rate_limited_total == 0, text
    # /stats, cached for minutes, shows each player's answers once they are written.
    assert result.stats.ok, (result.stats.replies, text)
    # The capacity report, the bot's own monitor and its clean shutdown.
    assert result.report.replies > 0
    assert result.report.users == 12
    assert len(result.report.stages) == 2
    assert result.health["checks"] == {"database": "ok"}, result.health
    assert result.bot_exit_code == 0, text
    assert "performance:" in result.bot_summary, text
    assert "answers writer:" in result.bot_summary, text
    assert "0 waiting" in result.bot_summary, text
    assert plot.stat().st_size > 0
    assert result.ok, text
    assert "Capacity report" in text
    assert "all checks passed" in text
