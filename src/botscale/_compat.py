"""Optional dependencies: import them lazily, fail with the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str, *, feature: str | None = None) -> ModuleType:
    """Import ``module`` or raise an ImportError that names the extra to install.

    Args:
        module: the module to import, e.g. ``"redis.asyncio"``.
        extra: the botscale extra that provides it, e.g. ``"redis"``.
        feature: what needs it, for the message (defaults to ``module``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = feature or module
        raise ImportError(
            f"{what} needs the optional dependency {module.split('.')[0]!r}: "
            f"install it with  pip install 'botscale[{extra}]'"
        ) from exc
