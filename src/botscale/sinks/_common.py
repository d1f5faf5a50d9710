"""What the SQL sinks share: column lists and identifier quoting."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

from .._errors import ConfigurationError

__all__ = ["Columns", "Row", "parse_columns", "quote_identifier"]

Row: TypeAlias = Sequence[Any] | Mapping[str, Any]
"""A row for a SQL sink: values in column order, or a mapping of column name to value.

The writers check a row's shape at ``put`` and turn a mapping into a tuple, so
the sink itself only ever receives sequences."""

Columns: TypeAlias = Iterable[str] | Mapping[str, str]
"""Column names, or a mapping of column name to SQL type (used to create the table)."""


def quote_identifier(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (any character allowed but NUL)."""
    return '"' + name.replace('"', '""') + '"'


def _check_name(what: str, name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, got {type(name).__name__}")
    if not name or "\x00" in name:
        raise ConfigurationError(f"{what} must be a non-empty name without NUL, got {name!r}")
    return name


def parse_columns(table: object, columns: object) -> tuple[str, tuple[str, ...], dict[str, str]]:
    """Validate ``table`` and ``columns``; return the table, the names and their types.

    Raises:
        ValueError: no columns, a duplicate or an empty name.
        TypeError: a name or a type that is not a ``str``.
    """
    table = _check_name("table", table)
    if isinstance(columns, (str, bytes)) or not isinstance(columns, Iterable):
        raise TypeError(
            "columns must be a sequence of column names or a mapping of name to SQL type, "
            f"got {type(columns).__name__}"
        )
    types: dict[str, str] = {}
    if isinstance(columns, Mapping):
        for name, sql_type in columns.items():
            _check_name("a column name", name)
            if not isinstance(sql_type, str) or not sql_type.strip():
                raise TypeError(f"the SQL type of column {name!r} must be a non-empty str")
            types[name] = sql_type
        names = tuple(types)
    else:
        names = tuple(_check_name("a column name", name) for name in columns)
    if not names:
        raise ConfigurationError("columns must name at least one column, got none")
    if len(set(names)) != len(names):
        raise ConfigurationError(f"columns must be unique, got {list(names)!r}")
    return table, names, types
