"""Static typing checks of the public API, run by mypy --strict (nox -s typecheck).

These lines are never executed by pytest; mypy verifies that the public names
carry the types their documentation promises.
"""

from __future__ import annotations

from typing_extensions import assert_type

from botscale import Decision, Rate

rate = Rate.parse("30/minute")
assert_type(rate, Rate)
assert_type(rate.interval, float)
decision = Decision(True, 4, 0.0)
assert_type(decision.allowed, bool)
assert_type(decision.remaining, int)
assert_type(decision.retry_after, float)
