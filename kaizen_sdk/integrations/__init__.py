"""Patches for LLM client libraries, one module per library, applied by ``kaizen_sdk.instrument``.

Each module has exactly ``_instrument(tracer, settings)`` and ``_uninstrument()``; the shared
span, record, stream and task logic lives in ``_common`` (``_methods`` wraps the methods of a
resource class for ``anthropic`` and ``google_genai``). Nothing here imports ``openai``,
``litellm``, ``anthropic`` or ``google.genai`` until that library is instrumented.
"""

from __future__ import annotations

__all__: list[str] = []
