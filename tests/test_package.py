"""The package's shape: exports, lazy optional imports, typing marker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import botscale

HEAVY = (
    "aiogram",
    "telegram",
    "telebot",
    "redis",
    "asyncpg",
    "aiohttp",
    "prometheus_client",
    "rich",
    "matplotlib",
    "sqlite3",
    "httpx",
    "psutil",
)


def test_import_botscale_pulls_in_no_framework_client_or_driver() -> None:
    code = (
        "import sys, botscale, botscale.testing, botscale.backends; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at `import botscale`: {out.stdout.strip()}"


def test_all_is_sorted_and_every_name_resolves() -> None:
    names = [n for n in botscale.__all__ if n != "__version__"]
    assert names == sorted(names)
    for name in botscale.__all__:
        assert hasattr(botscale, name), name


def test_py_typed_is_shipped() -> None:
    assert (Path(botscale.__file__).parent / "py.typed").is_file()
