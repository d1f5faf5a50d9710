"""The quiz itself: questions, per-user quiz state and answer checking.

Nothing here knows a bot framework, a database or botscale: it is the bot's
own domain logic, shared by the aiogram bot and the python-telegram-bot and
telebot versions.  The per-user state is a plain JSON-compatible dict so that
it can live in a ``MemoryStateStore`` or, unchanged, in Redis.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = [
    "QUESTIONS_FILE",
    "Answer",
    "Outcome",
    "Question",
    "apply_answer",
    "current",
    "format_question",
    "keyboard",
    "load_questions",
    "new_quiz",
    "parse_callback",
]

QUESTIONS_FILE: Final = Path(__file__).with_name("questions.json")
QUIZ_LENGTH: Final = 5
_PREFIX: Final = "a"


@dataclass(frozen=True, slots=True)
class Question:
    """One multiple-choice question."""

    id: int
    question: str
    options: tuple[str, ...]
    answer: int
    explanation: str


@dataclass(frozen=True, slots=True)
class Answer:
    """A pressed answer button, decoded from its callback data."""

    quiz: str
    question_id: int
    option: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What pressing a button did.

    Attributes:
        kind: ``"correct"``, ``"wrong"``, ``"stale"`` (a button of an old or
            finished quiz, or of a question already answered) or ``"invalid"``.
        question: the question answered (``None`` for stale/invalid).
        next_question: the next question to ask, ``None`` when the quiz ended.
        state: the user's new quiz state (unchanged for stale/invalid).
    """

    kind: str
    question: Question | None
    next_question: Question | None
    state: dict[str, Any]

    @property
    def finished(self) -> bool:
        return self.kind in ("correct", "wrong") and self.next_question is None


def load_questions(path: Path = QUESTIONS_FILE) -> dict[int, Question]:
    """Read the question file into ``{id: Question}``."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {
        int(q["id"]): Question(
            id=int(q["id"]),
            question=str(q["question"]),
            options=tuple(str(o) for o in q["options"]),
            answer=int(q["answer"]),
            explanation=str(q["explanation"]),
        )
        for q in raw
    }


def new_quiz(
    questions: dict[int, Question], rng: random.Random, length: int = QUIZ_LENGTH
) -> dict[str, Any]:
    """A fresh quiz state: a random quiz id and ``length`` question ids."""
    ids = rng.sample(sorted(questions), k=min(length, len(questions)))
    return {"quiz": f"{rng.getrandbits(32):08x}", "ids": ids, "pos": 0, "score": 0}


def current(state: dict[str, Any], questions: dict[int, Question]) -> Question | None:
    """The question the user is on, or ``None`` when the quiz is over."""
    ids: list[int] = state.get("ids", [])
    pos: int = state.get("pos", 0)
    return questions.get(ids[pos]) if pos < len(ids) else None


def parse_callback(data: str | None) -> Answer | None:
    """Decode ``"a:<quiz>:<question>:<option>"``; ``None`` for anything else."""
    if not data:
        return None
    parts = data.split(":")
    if len(parts) != 4 or parts[0] != _PREFIX:
        return None
    _, quiz, qid, option = parts
    if not (qid.isdigit() and option.isdigit()) or not quiz.isalnum():
        return None
    return Answer(quiz=quiz, question_id=int(qid), option=int(option))


def apply_answer(
    state: dict[str, Any] | None, answer: Answer | None, questions: dict[int, Question]
) -> Outcome:
    """Check ``answer`` against the user's quiz ``state`` and advance it."""
    if answer is None:
        return Outcome("invalid", None, None, state or {})
    if not state or state.get("quiz") != answer.quiz:
        return Outcome("stale", None, None, state or {})
    question = current(state, questions)
    if question is None or question.id != answer.question_id:
        return Outcome("stale", None, None, state)
    if not 0 <= answer.option < len(question.options):
        return Outcome("invalid", None, None, state)
    correct = answer.option == question.answer
    new_state = dict(state, pos=state["pos"] + 1, score=state["score"] + int(correct))
    return Outcome(
        "correct" if correct else "wrong", question, current(new_state, questions), new_state
    )


def format_question(question: Question, state: dict[str, Any]) -> str:
    """The message text for a question, with the user's progress."""
    return f"Question {state['pos'] + 1}/{len(state['ids'])}\n\n{question.question}"


def keyboard(question: Question, state: dict[str, Any]) -> list[list[tuple[str, str]]]:
    """Inline keyboard rows of ``(label, callback_data)``, one answer per row."""
    return [
        [(option, f"{_PREFIX}:{state['quiz']}:{question.id}:{index}")]
        for index, option in enumerate(question.options)
    ]
