"""Every ``python`` block in README.md and docs/*.md runs as written.

A block that cannot run here (it needs a real bot token, or it is a fragment of
a larger program) is marked in the Markdown with an HTML comment on the line
before it, ``<!-- not run: the reason -->``, and is then only compiled, so a
syntax error still fails.  Blocks run in page order in one namespace per page,
so a later block may use what an earlier one defined.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Pages whose examples a dedicated test runs with the set-up they need (a Redis
# server, the repository as working directory) and checks their printed output.
COVERED_BY = {
    "concurrency.md": "tests/test_concurrency.py",
    "monitoring.md": "tests/test_monitor.py",
    "redis.md": "tests/redis_backends/test_redis_docs.py",
    "retry.md": "tests/test_retry.py",
    "settings.md": "tests/test_settings.py",
    "simulator.md": "tests/test_simulator_docs.py",
    "state.md": "tests/test_state_docs.py",
    "caching.md": "tests/test_state_docs.py",
    "dedup.md": "tests/test_state_docs.py",
}
PAGES = [
    ROOT / "README.md",
    *(p for p in sorted((ROOT / "docs").glob("*.md")) if p.name not in COVERED_BY),
]
BLOCK = re.compile(r"(?:<!--\s*not run:(?P<why>[^>]*)-->\s*\n)?```python\n(?P<code>.*?)```", re.S)


def _blocks(page: Path) -> list[tuple[str, str | None]]:
    return [(m["code"], m["why"]) for m in BLOCK.finditer(page.read_text(encoding="utf-8"))]


@pytest.mark.parametrize(
    "page", [p for p in PAGES if _blocks(p)], ids=lambda p: str(p.relative_to(ROOT))
)
def test_python_blocks_run(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocks = _blocks(page)
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for index, (code, not_run) in enumerate(blocks):
        compiled = compile(code, f"{page.name}[block {index}]", "exec")
        if not_run is None:
            exec(compiled, namespace)


@pytest.mark.parametrize("page", sorted((ROOT / "docs").glob("*.md")), ids=lambda p: p.name)
def test_no_page_is_a_placeholder(page: Path) -> None:
    assert "Not written yet" not in page.read_text(encoding="utf-8")


@pytest.mark.parametrize(("page", "test_file"), sorted(COVERED_BY.items()))
def test_covered_pages_are_run_by_their_test(page: str, test_file: str) -> None:
    assert (ROOT / "docs" / page).is_file()
    assert page in (ROOT / test_file).read_text(encoding="utf-8")


def test_readme_shows_the_ci_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "nox -s tests" in ci
    assert 'python3 -m pip install "nox[uv]" && nox -s tests' in readme
    assert os.access(ROOT / ".ci" / "run", os.X_OK)
