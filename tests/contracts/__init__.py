"""Contract test suites that every implementation of a botscale Protocol must pass.

Subclass a contract in a ``test_*.py`` module and provide its factory fixture;
pytest collects the inherited tests for that implementation.
"""
