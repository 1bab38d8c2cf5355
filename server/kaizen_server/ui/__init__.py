"""The web UI of the local CT server (``/ui/``): server-rendered pages over the API's operations.

See `kaizen_server.ui.app` and ``docs/ui.md``.
"""

from __future__ import annotations

from kaizen_server.ui.app import COOKIE, PAGE, UI_PREFIX, UiApp, UiRequest, UiResponse, is_ui_path

__all__ = ["COOKIE", "PAGE", "UI_PREFIX", "UiApp", "UiRequest", "UiResponse", "is_ui_path"]
