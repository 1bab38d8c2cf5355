"""Keep ``import httpx`` from loading httpx's command-line client until someone runs it.

httpx's ``__init__`` does ``from ._main import main``, and ``httpx._main`` imports click, rich
and pygments whenever they are installed (they often are, for other tools): about 45 of the
80 ms that ``import httpx`` costs, and nothing the SDK ever calls. `defer` puts a placeholder
``httpx._main`` in `sys.modules` before httpx is first imported; its ``main`` loads the real
command-line client on first call and runs it, so the ``httpx`` command still works. When
httpx is already imported (the application imported it first), `defer` does nothing.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__all__ = ["defer"]

_NAME = "httpx._main"


def defer() -> None:
    """Install the placeholder ``httpx._main``, unless httpx is imported already."""
    if "httpx" in sys.modules or _NAME in sys.modules:
        return
    placeholder = types.ModuleType(_NAME, "placeholder: the real module loads on first use")
    placeholder.main = _main  # type: ignore[attr-defined]
    sys.modules[_NAME] = placeholder


def _main(*args: Any, **kwargs: Any) -> Any:
    """Run httpx's real command-line client (imported now, on its first use)."""
    if getattr(sys.modules.get(_NAME), "main", None) is _main:
        del sys.modules[_NAME]
    try:
        real = importlib.import_module(_NAME)
    except ImportError as exc:  # what httpx's own fallback says
        raise SystemExit(
            "The httpx command line client could not run because the required dependencies "
            "were not installed.\nMake sure you've installed everything with: "
            "pip install 'httpx[cli]'"
        ) from exc
    httpx = sys.modules["httpx"]
    httpx.main = real.main  # type: ignore[attr-defined]
    return real.main(*args, **kwargs)
