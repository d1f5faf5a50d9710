"""Runnable examples: the quiz bot (``examples.quizbot``), echo bots, the core demo."""
