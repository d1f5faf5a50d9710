"""The code in docs/state.md, docs/caching.md and docs/dedup.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ["state.md", "caching.md", "dedup.md"]


def _blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S)


@pytest.mark.parametrize(
    ("page", "index"),
    [(page, index) for page in PAGES for index in range(len(_blocks(page)))],
)
def test_every_python_block_runs(page: str, index: int, capsys: pytest.CaptureFixture[str]) -> None:
    code = _blocks(page)[index]
    exec(compile(code, f"docs/{page}[{index}]", "exec"), {"__name__": f"docs_{index}"})


@pytest.mark.parametrize("page", PAGES)
def test_the_page_is_written(page: str) -> None:
    text = (DOCS / page).read_text()
    assert "Not written yet" not in text
    assert len(_blocks(page)) >= 3
