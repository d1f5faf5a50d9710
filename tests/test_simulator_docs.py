"""The code in docs/simulator.md runs as written."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "simulator.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)


@pytest.fixture(autouse=True)
def restore_telebot_urls() -> Iterator[None]:
    from telebot import apihelper, asyncio_helper

    saved = apihelper.API_URL, asyncio_helper.API_URL
    yield
    apihelper.API_URL, asyncio_helper.API_URL = saved


def _params() -> list[object]:
    params: list[object] = []
    for index, code in enumerate(_blocks()):
        # A load test starts a bot process: a few seconds.
        marks = [pytest.mark.slow] if "run_loadtest(" in code else []
        params.append(pytest.param(index, marks=marks, id=f"block{index}"))
    return params


@pytest.mark.parametrize("index", _params())
def test_every_python_block_runs(
    index: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)  # the load test imports examples.* from the repository root
    code = _blocks()[index]
    exec(compile(code, f"docs/simulator.md[{index}]", "exec"), {"__name__": f"docs_{index}"})
    out = capsys.readouterr().out
    if "print(" in code:
        assert out.strip()
    if "the bot could not be measured" in code:
        assert "the bot could not be measured" not in out
        assert out.startswith("True ")


def test_the_page_is_written_and_its_figures_are_real() -> None:
    text = PAGE.read_text()
    assert "Not written yet" not in text
    assert len(_blocks()) >= 6
    assert (ROOT / "docs" / "loadtest-ramp.svg").is_file()
    for example in (
        "echo_aiogram",
        "echo_ptb",
        "echo_telebot",
        "echo_telebot_async",
        "quiz_aiogram",
        "slow_telebot",
    ):
        assert (ROOT / "examples" / f"{example}.py").is_file()
