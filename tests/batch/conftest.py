"""Fixtures for the batch writer tests: both twins, a fake clock, a scripted sink."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from batch_harness import Kind, Twin

from botscale.testing import FakeClock


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> Kind:
    """Which twin: ``BatchWriter`` (threads) or ``AsyncBatchWriter`` (asyncio)."""
    value: Kind = request.param
    return value


@pytest.fixture
def twin(kind: Kind) -> Iterator[Callable[..., Twin]]:
    """Make writers of the current kind; every one is closed after the test."""
    made: list[Twin] = []

    def make(sink: Any, clock: FakeClock | None = None, **kw: Any) -> Twin:
        t = Twin(kind, sink, clock, **kw)
        made.append(t)
        return t

    yield make
    for t in made:
        t.shutdown()
