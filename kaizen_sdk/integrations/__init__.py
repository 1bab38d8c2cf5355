"""Patches for LLM client libraries, one module per library, applied by ``kaizen_sdk.instrument``.

Each module has exactly ``_instrument(tracer, settings)`` and ``_uninstrument()``; the shared
span, record, stream and task logic lives in ``_common``. Nothing here imports ``openai`` or
``litellm`` until that library is instrumented.
"""

from __future__ import annotations

__all__: list[str] = []
