"""The examples of docs/redis.md run, against the real Redis, under a test prefix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.redis

PAGE = Path(__file__).resolve().parents[2] / "docs" / "redis.md"


def test_docs_examples_run(redis_url: str, prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)
    assert len(blocks) >= 9
    for block in blocks:
        code = block.replace("redis://127.0.0.1:6379/0", redis_url).replace('"mybot"', repr(prefix))
        exec(compile(code, str(PAGE), "exec"), {"__name__": "docs_example"})
    out = capsys.readouterr().out
    assert "connected: True" in out
    assert "malformed Redis URL redis://:***@127.0.0.1:notaport/0" in out
    assert "is unreachable" in out
    assert "hunter2" not in out
    assert "[True, True, True, True, True, False]" in out
    assert "[True, True, False]" in out
    assert "first message to chat 42 after 0.0 s" in out
    assert "{'step': 2, 'answers': ['B']}" in out
    assert "value['seen'] is of type set" in out
    assert "1 True gone" in out
    assert "False True" in out
    assert out.count("computing 7") == 1
    assert "RedisCacheInfo(hits=1, misses=1, coalesced=0, uncached=0)" in out
    assert "only one process handles this chat right now: True" in out
    assert "breaker='closed'" in out
