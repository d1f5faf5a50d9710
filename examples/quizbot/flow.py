"""The conversation, framework-free: what the bot answers to each command and button.

The aiogram bot (:mod:`.bot`) and the python-telegram-bot and telebot
versions only translate: they hand :class:`QuizFlow` the user, the update
and the text or button pressed, and send back the :class:`Reply` or
:class:`Press` it returns.  Every reply to bad input is a friendly message,
and bad input is logged at INFO at most.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

from botscale import (
    ConcurrencyLimiter,
    ConcurrencyTimeout,
    PerformanceMonitor,
    Priority,
    UserState,
    send_priority,
)

from .config import QuizConfig
from .quiz import (
    Outcome,
    Question,
    apply_answer,
    current,
    format_question,
    keyboard,
    load_questions,
    new_quiz,
    parse_callback,
)
from .storage import Storage, WriterFullError

__all__ = [
    "CORRECT",
    "EXPLAIN_PREFIX",
    "NEW_QUIZ",
    "SLOW_DOWN",
    "WRONG",
    "BroadcastResult",
    "Press",
    "QuizFlow",
    "Reply",
    "fake_ai_explain",
]

log: Final = logging.getLogger("quizbot")

EXPLAIN_PREFIX: Final = "x:"
"""Callback data of the "explain" button: ``x:<question id>``."""
NEW_QUIZ: Final = "n"
"""Callback data of the "new quiz" button."""
CORRECT: Final = "✅ Correct!"
"""The toast of a correct answer."""
WRONG: Final = "❌ Not quite."
"""The toast of a wrong answer."""
SLOW_DOWN: Final = (
    "🐢 Easy there! You are going faster than I can keep up: please wait {retry_after} s."
)
"""The once-per-window notice of the per-user rate limit."""
HELP: Final = (
    "I am a driving-theory quiz bot.\n\n"
    "/start - a new quiz of {length} questions\n"
    "/stats - your score\n"
    "/top - the leaderboard (/top 5 for the top five)"
)
TOP_DEFAULT: Final = 10
TOP_MAX: Final = 20
BROADCAST_WORKERS: Final = 32
EXPLAIN_QUEUE: Final = 4
"""Explanations allowed to wait per AI slot before "busy" is answered."""

Buttons = tuple[tuple[tuple[str, str], ...], ...]


@dataclass(frozen=True)
class Reply:
    """A message to send (or to put in place of the pressed one)."""

    text: str
    buttons: Buttons = ()


@dataclass(frozen=True)
class Press:
    """What to do after a button press.

    Attributes:
        toast: the ``answerCallbackQuery`` text (answered first, at once).
        edit: new text and buttons for the pressed message, if any.
        explain: a question to explain in the background (:meth:`QuizFlow.explain`).
    """

    toast: str
    edit: Reply | None = None
    explain: Question | None = None


@dataclass
class BroadcastResult:
    """How a broadcast went."""

    recipients: int = 0
    delivered: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Messages delivered per second."""
        return self.delivered / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line for the admin."""
        failed = f", {self.failed} failed ({_counts(self.errors)})" if self.failed else ""
        return (
            f"📣 Broadcast done: {self.delivered}/{self.recipients} delivered{failed} "
            f"in {self.seconds:.1f} s ({self.rate:.1f} msg/s)."
        )


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))


async def fake_ai_explain(question: Question, latency: float) -> str:
    """Stand-in for a slow AI API: waits ``latency`` seconds, then explains."""
    await asyncio.sleep(latency)
    return question.explanation


def _rows(rows: list[list[tuple[str, str]]]) -> Buttons:
    return tuple(tuple(row) for row in rows)


class QuizFlow:
    """The bot's behaviour, shared by the three frameworks.

    Args:
        config: the configuration.
        storage: batched writes and cached reads.
        monitor: times the AI calls and broadcasts.
        rng: the source of quiz ids and question order.
    """

    def __init__(
        self,
        config: QuizConfig,
        storage: Storage,
        monitor: PerformanceMonitor,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.storage = storage
        self.monitor = monitor
        self.questions = load_questions()
        self.rng = rng or random.Random()
        self.explainer = ConcurrencyLimiter(
            config.settings.max_concurrency, timeout=30.0, name="explain-ai"
        )
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ commands

    def help(self) -> Reply:
        """The help text (also the answer to anything the bot does not understand)."""
        return Reply(HELP.format(length=self.config.quiz_length))

    async def start(self, state: UserState | None, user_id: int, first_name: str) -> Reply:
        """``/start``: a new quiz (arguments such as deep-link payloads are ignored)."""
        quiz = new_quiz(self.questions, self.rng, self.config.quiz_length)
        if state is not None:
            state.set(quiz)
        await self.storage.record_start(user_id, first_name)
        return self._question_reply(quiz, f"👋 Hi {first_name}! Here is your quiz.\n\n")

    async def stats(self, user_id: int, args: str = "") -> Reply:
        """``/stats``: the user's score from the database (cached, retried)."""
        note = "(/stats takes no arguments.)\n\n" if args.strip() else ""
        try:
            stats = await self.storage.user_stats(user_id)
        except Exception as exc:
            log.warning("stats for user %s unavailable: %s: %s", user_id, type(exc).__name__, exc)
            return Reply(note + "📊 Your stats are unavailable right now. Try again in a minute.")
        if stats.answered == 0:
            return Reply(
                note + "📊 No answers recorded yet: /start a quiz! "
                "(Answers reach the database within a few seconds.)"
            )
        percent = 100 * stats.correct // stats.answered
        return Reply(
            f"{note}📊 Your score: {stats.correct}/{stats.answered} correct ({percent} %) "
            f"in {stats.quizzes} quiz{'zes' if stats.quizzes != 1 else ''}."
        )

    async def top(self, args: str = "") -> Reply:
        """``/top [N]``: the leaderboard (cached; may lag behind by the cache TTL)."""
        text = args.strip()
        limit, note = TOP_DEFAULT, ""
        if text:
            if text.isdigit() and 1 <= int(text) <= TOP_MAX:
                limit = int(text)
            else:
                note = f"(Usage: /top N with N from 1 to {TOP_MAX}; here is the top {limit}.)\n\n"
        try:
            leaders = await self.storage.top(limit)
        except Exception as exc:
            log.warning("leaderboard unavailable: %s: %s", type(exc).__name__, exc)
            return Reply(note + "🏆 The leaderboard is unavailable right now. Try again soon.")
        if not leaders:
            return Reply(note + "🏆 Nobody is on the leaderboard yet. /start a quiz!")
        lines = [
            f"{rank}. {leader.name or 'someone'}: {leader.correct}/{leader.answered}"
            for rank, leader in enumerate(leaders, 1)
        ]
        return Reply(note + "🏆 Top players\n\n" + "\n".join(lines))

    def is_admin(self, user_id: int | None) -> bool:
        """Whether the user may ``/broadcast`` (``ADMIN_IDS``)."""
        return user_id is not None and user_id in self.config.admin_ids

    def check_broadcast(self, user_id: int | None, args: str) -> Reply | None:
        """``None`` when ``/broadcast args`` may go ahead, else the polite refusal."""
        if not self.is_admin(user_id):
            log.info("user %s tried /broadcast without being an admin", user_id)
            return Reply("Sorry, /broadcast is only for the bot's admins.")
        if not args.strip():
            return Reply("Usage: /broadcast <the message to send to every user>")
        if len(args) > 4000:
            return Reply("That message is too long: 4000 characters at most.")
        return None

    # ------------------------------------------------------------------ buttons

    async def press(
        self, state: UserState | None, user_id: int, update_id: int | None, data: str | None
    ) -> Press:
        """A pressed inline button: an answer, "explain" or "new quiz"."""
        if data == NEW_QUIZ:
            quiz = new_quiz(self.questions, self.rng, self.config.quiz_length)
            if state is not None:
                state.set(quiz)
            return Press("▶️ New quiz!", self._question_reply(quiz))
        if data is not None and data.startswith(EXPLAIN_PREFIX):
            return self._explain_press(data)
        answer = parse_callback(data)
        if answer is None:
            log.info("user %s pressed a button with unknown data %r", user_id, (data or "")[:64])
            return Press("🤔 I don't know that button. Send /start for a new quiz.")
        old = state.get() if state is not None else None
        outcome = apply_answer(old, answer, self.questions)
        if outcome.kind == "invalid":
            log.info("user %s pressed an invalid answer %r", user_id, data)
            return Press("🤔 That is not one of the answers. Send /start for a new quiz.")
        if outcome.kind == "stale" or state is None:
            return self._stale(old, answer.quiz)
        # Advance atomically: with Redis, two processes may get two presses of one user.
        seen: list[tuple[Any, Outcome]] = []

        def advance(current: Any) -> Any:
            step = apply_answer(current, answer, self.questions)
            seen[:] = [(current, step)]
            return step.state if step.kind in ("correct", "wrong") else current

        new = state.update(advance)
        before, outcome = seen[0]
        if outcome.kind not in ("correct", "wrong"):
            return self._stale(before, answer.quiz)
        assert outcome.question is not None
        try:
            await self.storage.record_answer(
                (
                    update_id or 0,
                    user_id,
                    answer.quiz,
                    answer.question_id,
                    answer.option,
                    outcome.kind == "correct",
                    time.time(),
                )
            )
        except WriterFullError:
            state.update(lambda current: before if current == new else current)
            log.warning("answer of user %s refused: the database is too far behind", user_id)
            return Press("⚠️ I can't save answers right now. Please press again in a minute.")
        question = outcome.question
        if outcome.kind == "correct":
            toast, verdict = CORRECT, CORRECT
        else:
            right = question.options[question.answer]
            toast, verdict = WRONG, f"❌ Not quite: the answer is “{right}”."
        if outcome.next_question is None:
            score = outcome.state["score"]
            total = len(outcome.state["ids"])
            return Press(
                toast,
                Reply(
                    f"{verdict}\n\n🏁 Quiz finished: {score}/{total} correct.\n"
                    "/stats for your score, /top for the leaderboard.",
                    (
                        (("▶️ New quiz", NEW_QUIZ),),
                        (("💡 Explain the last answer", f"{EXPLAIN_PREFIX}{question.id}"),),
                    ),
                ),
            )
        return Press(toast, self._question_reply(outcome.state, f"{verdict}\n\n", question))

    def _stale(self, old: dict[str, Any] | None, quiz_id: str) -> Press:
        if not old:
            return Press(
                "⌛ That quiz has expired.",
                Reply("⌛ This quiz has expired.", ((("▶️ New quiz", NEW_QUIZ),),)),
            )
        if old.get("quiz") != quiz_id:
            return Press("⌛ That button belongs to an old quiz: use the latest one, or /start.")
        return Press("⌛ Already answered: see the next question.")

    def _explain_press(self, data: str) -> Press:
        text = data[len(EXPLAIN_PREFIX) :]
        question = self.questions.get(int(text)) if text.isdigit() else None
        if question is None:
            log.info("explain button with unknown question %r", data[:64])
            return Press("🤔 I don't know that question. Send /start for a new quiz.")
        if self.explainer.waiting >= EXPLAIN_QUEUE * self.explainer.limit:
            return Press("🤖 The explainer is busy right now. Try again in a minute.")
        return Press("🤖 Thinking…", explain=question)

    def _question_reply(
        self, quiz: dict[str, Any], intro: str = "", previous: Question | None = None
    ) -> Reply:
        question = current(quiz, self.questions)
        assert question is not None
        rows = _rows(keyboard(question, quiz))
        if previous is not None:
            rows += ((("💡 Explain the last answer", f"{EXPLAIN_PREFIX}{previous.id}"),),)
        return Reply(intro + format_question(question, quiz), rows)

    # ------------------------------------------------------------------ slow work

    async def explain(self, question: Question) -> str:
        """The AI's explanation, at most ``BOTSCALE_MAX_CONCURRENCY`` calls at once.

        Returns the text to send (a polite "busy" when no slot came free in time).
        """
        try:
            async with self.explainer:
                with self.monitor.track("ai.explain", question=question.id):
                    text = await fake_ai_explain(question, self.config.explain_latency)
        except ConcurrencyTimeout:
            return "🤖 The explainer is too busy right now. Please try again later."
        return f"💡 {question.question}\n\n{text}"

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run slow work (explanations, broadcasts) outside the update's turn."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def broadcast(
        self, text: str, send: Callable[[int, str], Awaitable[object]]
    ) -> BroadcastResult:
        """Send ``text`` to every known user through the flood control, as bulk traffic.

        Replies to users who are waiting go first (``Priority.BULK``); a user
        who blocked the bot counts as failed, never stops the broadcast.
        """
        result = BroadcastResult()
        started = time.monotonic()
        users = await self.storage.known_users()
        result.recipients = len(users)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for user_id in users:
            queue.put_nowait(user_id)

        async def worker() -> None:
            while not queue.empty():
                user_id = queue.get_nowait()
                try:
                    await send(user_id, text)
                    result.delivered += 1
                except Exception as exc:
                    result.failed += 1
                    name = type(exc).__name__
                    result.errors[name] = result.errors.get(name, 0) + 1
                    log.info("broadcast to %s failed: %s: %s", user_id, name, exc)

        with send_priority(Priority.BULK), self.monitor.track("broadcast", users=len(users)):
            await asyncio.gather(*(worker() for _ in range(min(BROADCAST_WORKERS, len(users)))))
        result.seconds = time.monotonic() - started
        log.info("%s", result.summary())
        return result

    async def close(self) -> None:
        """Finish (or, after 10 s, cancel) the background work."""
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=10.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
