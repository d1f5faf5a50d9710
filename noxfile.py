"""One entry point, locally and in CI: ``nox -s tests lint typecheck docs bench demo``."""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = os.environ.get("BOTSCALE_NOX_PYTHON") or None  # the interpreter nox runs on
DEV = ".[all,dev]"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite (unit, property, integration with real services)."""
    session.install("-e", DEV)
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the library, the typing tests and the examples."""
    session.install("-e", DEV)
    session.run("mypy", "--strict", "src", "tests/typing", "examples")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks: ratios against the floor and the peer libraries, in one run."""
    session.install("-e", ".[all,bench]")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation in strict mode."""
    session.install("-e", ".[docs]")
    session.env["NO_MKDOCS_2_WARNING"] = "1"
    session.run("mkdocs", "build", "--strict", "--site-dir", "build/site")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The README's main command: the quiz bot against several hundred simulated users."""
    session.install("-e", ".[all]")
    session.run("python", "-m", "examples.quizbot.demo", *session.posargs)


@nox.session(python=PYTHON)
def core_demo(session: nox.Session) -> None:
    """A ten-second tour of the core (limiter, retry, bulkhead) with no network."""
    session.install("-e", ".")
    session.run("python", "examples/core_demo.py", *session.posargs)
