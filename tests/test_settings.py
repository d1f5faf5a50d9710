"""Settings: defaults, BOTSCALE_* variables, checks and error messages."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from botscale import ConfigurationError, Rate, Settings

DOCS = Path(__file__).resolve().parents[1] / "docs" / "settings.md"


def test_defaults_are_the_numbers_bot_authors_settled_on() -> None:
    s = Settings()
    assert s.user_rate == Rate(30, 60.0)
    assert s.user_capacity == 30
    assert (s.state_maxsize, s.state_ttl) == (2000, 3600.0)
    assert (s.cache_maxsize, s.cache_ttl) == (5000, 300.0)
    assert s.slow_threshold == 2.0
    assert (s.batch_size, s.batch_delay) == (50, 2.0)
    assert s.max_concurrency == 8
    assert s.retry_attempts == 3
    assert s.redis_url is None
    assert s.postgres_dsn is None
    assert (s.monitor_host, s.monitor_port) == ("127.0.0.1", None)
    assert s.log_level == "INFO"
    assert Settings.from_env({}) == s


@pytest.mark.parametrize(
    ("variable", "text", "field", "value"),
    [
        ("BOTSCALE_REDIS_URL", "redis://cache:6379/1", "redis_url", "redis://cache:6379/1"),
        ("BOTSCALE_POSTGRES_DSN", "postgresql://db/bot", "postgres_dsn", "postgresql://db/bot"),
        ("BOTSCALE_USER_RATE", "10/minute", "user_rate", Rate(10, 60.0)),
        ("BOTSCALE_USER_RATE", "20 per 60 seconds", "user_rate", Rate(20, 60.0)),
        ("BOTSCALE_USER_BURST", "15", "user_burst", 15),
        ("BOTSCALE_STATE_MAXSIZE", "10_000", "state_maxsize", 10_000),
        ("BOTSCALE_STATE_TTL", "2h", "state_ttl", 7200.0),
        ("BOTSCALE_STATE_TTL", "none", "state_ttl", None),
        ("BOTSCALE_CACHE_TTL", "5m", "cache_ttl", 300.0),
        ("BOTSCALE_CACHE_MAXSIZE", "100", "cache_maxsize", 100),
        ("BOTSCALE_SLOW_THRESHOLD", "500ms", "slow_threshold", 0.5),
        ("BOTSCALE_SLOW_THRESHOLD", " 1.5 ", "slow_threshold", 1.5),
        ("BOTSCALE_BATCH_SIZE", "100", "batch_size", 100),
        ("BOTSCALE_BATCH_DELAY", "0.25s", "batch_delay", 0.25),
        ("BOTSCALE_MAX_CONCURRENCY", "16", "max_concurrency", 16),
        ("BOTSCALE_RETRY_ATTEMPTS", "5", "retry_attempts", 5),
        ("BOTSCALE_RETRY_TIMEOUT", "off", "retry_timeout", None),
        ("BOTSCALE_MONITOR_HOST", "0.0.0.0", "monitor_host", "0.0.0.0"),
        ("BOTSCALE_MONITOR_PORT", "9100", "monitor_port", 9100),
        ("BOTSCALE_MONITOR_PORT", "0", "monitor_port", 0),
        ("BOTSCALE_LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("BOTSCALE_LOG_LEVEL", "warn", "log_level", "WARNING"),
        ("BOTSCALE_LOG_LEVEL", "40", "log_level", "ERROR"),
    ],
)
def test_each_variable_is_read(variable: str, text: str, field: str, value: object) -> None:
    s = Settings.from_env({variable: text})
    assert getattr(s, field) == value
    others = {f.name for f in dataclasses.fields(Settings)} - {field}
    for name in others:
        assert getattr(s, name) == getattr(Settings(), name)


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOTSCALE_BATCH_SIZE", "77")
    assert Settings.from_env().batch_size == 77


def test_empty_values_keep_the_default() -> None:
    assert Settings.from_env({"BOTSCALE_BATCH_SIZE": "", "BOTSCALE_REDIS_URL": "  "}) == Settings()


def test_platform_names_are_read_when_botscale_ones_are_unset() -> None:
    env = {"DATABASE_URL": "postgres://plain/db", "REDIS_URL": "rediss://r:6380"}
    s = Settings.from_env(env)
    assert s.postgres_dsn == "postgres://plain/db"
    assert s.redis_url == "rediss://r:6380"
    env["BOTSCALE_DATABASE_URL"] = "postgresql://prefixed/db"
    assert Settings.from_env(env).postgres_dsn == "postgresql://prefixed/db"
    env["BOTSCALE_POSTGRES_DSN"] = "postgresql://own/db"
    assert Settings.from_env(env).postgres_dsn == "postgresql://own/db"


def test_custom_prefix() -> None:
    s = Settings.from_env({"MYBOT_BATCH_SIZE": "9", "BOTSCALE_BATCH_SIZE": "1"}, prefix="MYBOT_")
    assert s.batch_size == 9


def test_user_capacity_follows_the_burst() -> None:
    assert Settings(user_burst=5).user_capacity == 5
    assert Settings(user_rate=Rate(1, 1.0)).user_capacity == 1


@pytest.mark.parametrize(
    ("variable", "text", "accepted"),
    [
        ("BOTSCALE_BATCH_SIZE", "0", "an int >= 1"),
        ("BOTSCALE_BATCH_SIZE", "fifty", "an int >= 1"),
        ("BOTSCALE_BATCH_SIZE", "2.5", "an int >= 1"),
        ("BOTSCALE_STATE_MAXSIZE", "-3", "an int >= 1"),
        ("BOTSCALE_CACHE_TTL", "0", "seconds > 0"),
        ("BOTSCALE_CACHE_TTL", "soon", "seconds > 0"),
        ("BOTSCALE_CACHE_TTL", "none", "seconds > 0"),
        ("BOTSCALE_BATCH_DELAY", "inf", "seconds > 0"),
        ("BOTSCALE_USER_RATE", "lots", "30/minute"),
        ("BOTSCALE_USER_RATE", "0/minute", "30/minute"),
        ("BOTSCALE_USER_BURST", "0", "an int >= 1"),
        ("BOTSCALE_MONITOR_PORT", "70000", "0..65535"),
        ("BOTSCALE_LOG_LEVEL", "chatty", "DEBUG, INFO"),
        ("BOTSCALE_REDIS_URL", "localhost:6379", "redis://"),
        ("BOTSCALE_POSTGRES_DSN", "mysql://db", "postgresql://"),
    ],
)
def test_bad_values_name_the_variable_and_what_it_accepts(
    variable: str, text: str, accepted: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({variable: text})
    message = str(info.value)
    assert variable in message
    assert accepted in message
    assert isinstance(info.value, ValueError)


def test_secrets_are_redacted_in_errors_and_repr() -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({"BOTSCALE_REDIS_URL": "http://user:hunter2@host"})
    assert "hunter2" not in str(info.value)
    s = Settings(postgres_dsn="postgresql://bot:hunter2@db:5432/bot")
    assert "hunter2" not in repr(s)
    assert "postgresql://bot:***@db:5432/bot" in repr(s)
    assert s.postgres_dsn == "postgresql://bot:hunter2@db:5432/bot"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_delay": -1.0}, "batch_delay"),
        ({"max_concurrency": True}, "max_concurrency"),
        ({"user_rate": "30/minute"}, "user_rate"),
        ({"monitor_port": -1}, "monitor_port"),
        ({"redis_url": "nope"}, "redis_url"),
    ],
)
def test_values_given_in_code_are_checked_too(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError, match=f"Settings.{field} must be"):
        Settings(**kwargs)  # type: ignore[arg-type]


def test_frozen_and_replace_checks() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.batch_size = 3  # type: ignore[misc]
    assert s.replace(batch_size=3).batch_size == 3
    with pytest.raises(ConfigurationError, match="batch_size"):
        s.replace(batch_size=0)


def test_a_likely_typo_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="botscale.settings"):
        s = Settings.from_env({"BOTSCALE_BATCH_SIZ": "3", "BOTSCALE_REQUIRE_SERVICES": "1"})
    assert s.batch_size == 50
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "ignoring unknown setting BOTSCALE_BATCH_SIZ (did you mean BOTSCALE_BATCH_SIZE?)"
    ]


def test_strict_rejects_unknown_variables() -> None:
    with pytest.raises(ConfigurationError, match="did you mean BOTSCALE_CACHE_TTL"):
        Settings.from_env({"BOTSCALE_CACHE_TL": "3"}, strict=True)
    with pytest.raises(ConfigurationError, match="unknown setting BOTSCALE_COLOUR"):
        Settings.from_env({"BOTSCALE_COLOUR": "blue"}, strict=True)


def test_variables_describe_every_field() -> None:
    infos = Settings.variables()
    assert [i.field for i in infos] == [f.name for f in dataclasses.fields(Settings)]
    by_field = {i.field: i for i in infos}
    assert by_field["postgres_dsn"].also == ("BOTSCALE_DATABASE_URL", "DATABASE_URL")
    assert by_field["batch_size"].default == 50
    assert all(i.accepts and i.doc for i in infos)


def test_docs_list_every_variable() -> None:
    text = DOCS.read_text()
    missing = [i.variable for i in Settings.variables() if f"`{i.variable}`" not in text]
    assert not missing, f"docs/settings.md does not document {missing}"


@given(st.integers(1, 10**9))
def test_any_positive_int_round_trips(n: int) -> None:
    assert Settings.from_env({"BOTSCALE_BATCH_SIZE": str(n)}).batch_size == n


@given(st.floats(0.001, 1e6, allow_nan=False))
def test_any_positive_duration_round_trips(seconds: float) -> None:
    assert Settings.from_env({"BOTSCALE_CACHE_TTL": repr(seconds)}).cache_ttl == seconds


def test_docs_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) >= 3
    for block in blocks:
        exec(compile(block, str(DOCS), "exec"), {"__name__": "docs_example"})
    out = capsys.readouterr().out
    assert "BOTSCALE_BATCH_SIZE='fifty' is not accepted: expected an int >= 1" in out
    assert "did you mean BOTSCALE_CACHE_TTL?" in out
