"""The web UI tests' fixtures, defined in `ui_support` (see there)."""

from __future__ import annotations

from ui_support import api, browser, ui_server

__all__ = ["api", "browser", "ui_server"]
