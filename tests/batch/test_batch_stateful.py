"""A stateful property test: nothing put into a batch writer is lost or doubled.

Hypothesis drives either twin (and the asyncio twin with a sync and with an
async sink) through random puts, flushes, clock advances
and injected sink failures: transient (the next few calls fail: a blip within
the retry budget, or an outage beyond it) and permanent (a poisoned item the
sink always refuses).  At every step:

* no item reaches the sink twice, or both the sink and the dead letters;
* what was written keeps the order of the puts;
* the writer's books balance (items_in == written + dead + dropped + pending + in flight).

After every flush and at the end (close): every item put is in the sink
exactly once, or in the dead letters, or was shed by the overflow policy and
handed to ``on_drop`` -- never neither.  A poisoned item always ends in the
dead letters alone, and an item is dead-lettered only for a reason: it is
poisoned, or its batch outlasted the retry budget during an outage.
"""

from __future__ import annotations

from typing import Any

from batch_harness import (
    AsyncScriptedSink,
    DeadLetters,
    PermanentError,
    ScriptedSink,
    TransientError,
    Twin,
    accounted,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from botscale.testing import FakeClock

ATTEMPTS = 3


class WriterMachine(RuleBasedStateMachine):
    kind: Any = "sync"
    sink_class: type[ScriptedSink] = ScriptedSink

    def __init__(self) -> None:
        super().__init__()
        self.twin: Twin | None = None
        self.put: list[int] = []
        self.refused: list[int] = []
        self.on_drop: list[int] = []
        self.next_id = 0

    @initialize(
        max_batch=st.sampled_from([1, 2, 3, 5]),
        spare=st.sampled_from([1, 2, 4]),
        overflow=st.sampled_from(["block", "drop_oldest", "reject"]),
        split=st.booleans(),
    )
    def start(self, max_batch: int, spare: int, overflow: str, split: bool) -> None:
        self.clock = FakeClock()
        self.sink = self.sink_class()
        self.dead = DeadLetters()
        self.max_batch = max_batch
        self.overflow = overflow
        self.twin = Twin(
            self.kind,
            self.sink,
            self.clock,
            max_batch=max_batch,
            max_delay=1.0,
            max_pending=max_batch * spare,
            overflow=overflow,
            on_drop=self.on_drop.append,
            retry_attempts=ATTEMPTS,
            dead_letter=self.dead,
            split_on_failure=split,
        )

    # -- actions ------------------------------------------------------------------

    @precondition(lambda self: self.twin is not None)
    @rule(n=st.integers(1, 12), poisoned=st.booleans())
    def put_items(self, n: int, poisoned: bool) -> None:
        assert self.twin is not None
        for i in range(n):
            item = self.next_id
            self.next_id += 1
            if poisoned and i == n - 1:
                self.sink.poison.add(item)
            if self.twin.put(item):
                self.put.append(item)
            else:
                self.refused.append(item)

    @precondition(lambda self: self.twin is not None)
    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 3.0]))
    def advance_clock(self, seconds: float) -> None:
        assert self.twin is not None
        self.twin.advance(seconds)

    @precondition(lambda self: self.twin is not None)
    @rule(calls=st.integers(1, ATTEMPTS - 1))
    def blip(self, calls: int) -> None:
        """A transient failure the retry budget absorbs."""
        self.sink.fail_next = calls

    @precondition(lambda self: self.twin is not None)
    @rule(calls=st.integers(ATTEMPTS, 3 * ATTEMPTS))
    def outage(self, calls: int) -> None:
        """A transient failure longer than one batch's retry budget."""
        self.sink.fail_next = calls

    @precondition(lambda self: self.twin is not None)
    @rule()
    def flush(self) -> None:
        assert self.twin is not None
        self.twin.flush()
        self.check_complete(closing=False)

    # -- checks -------------------------------------------------------------------

    @invariant()
    def nothing_twice_and_books_balance(self) -> None:
        if self.twin is None:
            return
        dead = self.dead.items  # read before the sink: items only move sink-wards or dead-wards
        written = self.sink.items
        assert len(written) == len(set(written)), "an item was written twice"
        assert not set(written) & set(dead), "an item is both written and dead-lettered"
        assert len(dead) == len(set(dead)), "an item was dead-lettered twice"
        assert written == sorted(written), "the sink saw items out of order"
        assert set(written) | set(dead) <= set(self.put) | set(self.refused)
        assert not set(self.sink.poison) & set(written)
        assert accounted(self.twin.stats())

    def check_complete(self, *, closing: bool) -> None:
        assert self.twin is not None
        stats = self.twin.stats()
        written, dead = self.sink.items, self.dead.items
        assert stats.pending == 0
        assert stats.in_flight == 0
        assert stats.written == len(written)
        assert stats.dead_lettered == len(dead)
        assert stats.dead_letter_failures == 0
        everything = sorted(written + dead + self.on_drop)
        assert everything == sorted(self.put + self.refused), "an item was lost"
        assert sorted(self.refused) == sorted(set(self.refused) & set(self.on_drop))
        assert stats.dropped == len(self.on_drop)
        if self.overflow == "block":
            assert self.on_drop == []
            assert self.refused == []
        assert set(self.sink.poison) & set(self.put) <= set(dead) | set(self.on_drop)
        for items, error in self.dead.batches:
            if isinstance(error, PermanentError):
                assert len(items) == 1 or not self.twin.writer._s.split_on_failure
            else:
                assert isinstance(error, TransientError), error

    def teardown(self) -> None:
        if self.twin is None:
            return
        try:
            self.sink.fail_next = 0
            self.twin.close()
            self.check_complete(closing=True)
            self.twin.close()  # twice: harmless
        finally:
            self.twin.shutdown()


SETTINGS = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class SyncWriterMachine(WriterMachine):
    kind = "sync"


class AsyncWriterMachine(WriterMachine):
    """The asyncio twin with a sync sink: written on its sink thread."""

    kind = "async"


class AsyncSinkWriterMachine(WriterMachine):
    """The asyncio twin with an async sink: written on the event loop."""

    kind = "async"
    sink_class = AsyncScriptedSink


TestSyncWriterNeverLosesItems = SyncWriterMachine.TestCase
TestSyncWriterNeverLosesItems.settings = SETTINGS
TestAsyncWriterNeverLosesItems = AsyncWriterMachine.TestCase
TestAsyncWriterNeverLosesItems.settings = SETTINGS
TestAsyncSinkWriterNeverLosesItems = AsyncSinkWriterMachine.TestCase
TestAsyncSinkWriterNeverLosesItems.settings = SETTINGS
