"""Pure parts of the Redis backends: breaker, prefixes, URLs, JSON checks, rounding."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from botscale import BackendError, ConfigurationError, Decision
from botscale.backends._json import dumps, loads
from botscale.backends._redis_base import check_prefix, encode_key
from botscale.backends._redis_limiter import decision, micros
from botscale.backends.redis import (
    CircuitBreaker,
    RedisBackend,
    RedisStateStore,
    connect,
    connect_async,
    mask_url,
)
from botscale.testing import FakeClock

# --- circuit breaker -------------------------------------------------------------------------


def state_of(breaker: CircuitBreaker) -> str:
    return breaker.state  # read through a call: mypy would narrow the property


def test_breaker_opens_after_consecutive_failures_and_probes_after_cooldown(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(failures=3, cooldown=10.0, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert state_of(breaker) == "closed"
    breaker.record_failure()
    assert state_of(breaker) == "open"
    assert breaker.opened == 1
    assert not breaker.allow()
    clock.advance(9.999)
    assert not breaker.allow()
    clock.advance(0.001)
    assert breaker.allow()  # the probe
    assert state_of(breaker) == "half_open"
    assert not breaker.allow()  # one probe at a time
    breaker.record_success()
    assert state_of(breaker) == "closed"
    assert breaker.allow()


def test_a_success_resets_the_failure_count(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failures=2, cooldown=1.0, clock=clock)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert state_of(breaker) == "closed"


def test_a_failed_probe_reopens_for_another_cooldown(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failures=1, cooldown=5.0, clock=clock)
    breaker.record_failure()
    clock.advance(5.0)
    assert breaker.allow()
    breaker.record_failure()
    assert state_of(breaker) == "open"
    assert breaker.opened == 2
    clock.advance(4.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()


def test_a_probe_that_never_reports_is_replaced_after_a_cooldown(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failures=1, cooldown=2.0, clock=clock)
    breaker.record_failure()
    clock.advance(2.0)
    assert breaker.allow()
    clock.advance(1.0)
    assert not breaker.allow()
    clock.advance(1.0)
    assert breaker.allow()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"failures": 0}, ConfigurationError),
        ({"failures": 1.5}, TypeError),
        ({"cooldown": 0}, ConfigurationError),
        ({"cooldown": float("inf")}, ConfigurationError),
    ],
)
def test_breaker_rejects_bad_arguments(kwargs: dict[str, float], error: type[Exception]) -> None:
    with pytest.raises(error, match=next(iter(kwargs))):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


# --- prefixes and keys -----------------------------------------------------------------------


@pytest.mark.parametrize("good", ["mybot", "a", "bot-1.prod_2", "X" * 64])
def test_good_prefixes(good: str) -> None:
    assert check_prefix(good) == good


@pytest.mark.parametrize(
    "bad", ["", "my:bot", "{bot}", "bot*", "my bot", "-bot", "X" * 65, "bot\n"]
)
def test_bad_prefixes_are_rejected_naming_the_argument(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="prefix"):
        check_prefix(bad)


def test_prefix_must_be_str() -> None:
    with pytest.raises(TypeError, match="prefix must be str, got bytes"):
        check_prefix(b"bot")


def test_components_reject_an_empty_prefix_before_touching_the_client() -> None:
    with pytest.raises(ConfigurationError, match="prefix"):
        RedisBackend(object(), prefix="")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="prefix"):
        RedisStateStore(object(), prefix="")  # type: ignore[arg-type]


keys = st.one_of(st.integers(), st.text())


@given(keys, keys)
def test_encoded_keys_are_equal_only_for_equal_keys_of_one_type(a: int | str, b: int | str) -> None:
    same = type(a) is type(b) and a == b
    assert (encode_key(a) == encode_key(b)) == same
    assert encode_key(7) != encode_key("7")


def test_bool_is_not_a_key() -> None:
    with pytest.raises(TypeError, match="key must be str or int, got bool"):
        encode_key(True)


# --- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:s3cret@host/1", "redis://user:***@host/1"),
        ("rediss://user:p@ss@host", "rediss://user:***@host"),
        ("redis://tokenonly@host", "redis://***@host"),
        ("redis://host/0?password=s3cret&db=1", "redis://host/0?password=***&db=1"),
    ],
)
def test_mask_url_hides_passwords(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    "url",
    [
        "http://:s3cret@localhost:6379",
        "redis://:s3cret@localhost:notaport",
        "redis://:s3cret@localhost:99999",
        "localhost:6379",
    ],
)
def test_malformed_url_fails_at_start_naming_the_url_without_password(url: str) -> None:
    with pytest.raises(ConfigurationError, match="malformed Redis URL") as info:
        connect(url)
    assert "s3cret" not in str(info.value)
    assert mask_url(url) in str(info.value)
    with pytest.raises(ConfigurationError, match="malformed Redis URL"):
        RedisBackend.from_url(url, prefix="bot")


def test_unreachable_url_fails_at_start_naming_the_url_without_password(free_port: int) -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port}/0"
    for build in (
        lambda: connect(url, socket_connect_timeout=0.5),
        lambda: connect_async(url, socket_connect_timeout=0.5),
        lambda: RedisStateStore.from_url(url, prefix="bot", socket_connect_timeout=0.5),
    ):
        with pytest.raises(BackendError, match="unreachable") as info:
            build()
        assert "s3cret" not in str(info.value)
        assert f"redis://:***@127.0.0.1:{free_port}/0" in str(info.value)


def test_url_must_be_text() -> None:
    with pytest.raises(TypeError, match="url must be str"):
        connect(b"redis://localhost")  # type: ignore[arg-type]


def test_timeouts_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="socket_timeout"):
        connect("redis://localhost", socket_timeout=0, check=False)


# --- JSON values -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=20,
)


@given(json_values)
def test_json_values_round_trip_unchanged(value: object) -> None:
    assert loads(dumps(value)) == value


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ({1, 2}, "value .*set"),
        (b"raw", "value .*bytes"),
        ({"a": (1, 2)}, r"value\['a'\] .*tuple"),
        ([1, object()], r"value\[1\] .*object"),
        ({1: "x"}, "key of type int"),
    ],
)
def test_non_json_values_raise_type_error_naming_the_type(value: object, named: str) -> None:
    with pytest.raises(TypeError, match=named):
        dumps(value)


def test_nan_is_refused() -> None:
    with pytest.raises(ValueError, match="nan"):
        dumps({"x": math.nan})


# --- interval rounding -----------------------------------------------------------------------


@given(st.floats(min_value=1e-6, max_value=1e6))
def test_micros_never_shortens_an_interval(interval: float) -> None:
    us = micros(interval)
    assert us >= interval * 1e6 - 1e-3
    assert us <= interval * 1e6 + 1


@pytest.mark.parametrize(("interval", "us"), [(0.1, 100_000), (2.0, 2_000_000), (1 / 30, 33_334)])
def test_micros_of_common_intervals(interval: float, us: int) -> None:
    assert micros(interval) == us


# --- replies of gcra.lua ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (0, Decision(True, 0, 0.0)),
        (7, Decision(True, 7, 0.0)),
        (100_000, Decision(True, 100_000, 0.0)),
        (-1, Decision(False, 0, 0.0)),
        (-1 - 2_500_000, Decision(False, 0, 2.5)),
        ([2, 1_000_000], Decision(False, 2, 1.0)),
    ],
)
def test_script_replies_become_decisions(reply: int | list[int], expected: Decision) -> None:
    assert decision(reply) == expected


# --- optional dependency -----------------------------------------------------------------------


def test_redis_is_imported_lazily_and_its_absence_names_the_extra() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import botscale.backends.redis as r\n"
        "assert 'redis' not in sys.modules, 'imported at import time'\n"
        "sys.modules['redis'] = None\n"
        "try:\n"
        "    r.RedisBackend(object(), prefix='bot')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'botscale[redis]'" in out.stdout
