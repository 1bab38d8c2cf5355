"""OpenTelemetry instrumentor classes for ``opentelemetry-instrument`` (zero-code set-up).

The package's ``opentelemetry_instrumentor`` entry points name the classes here, so running an
application under ``opentelemetry-instrument`` traces its openai and litellm calls as
``kaizen_sdk.instrument(openai)`` / ``kaizen_sdk.instrument(litellm)`` would (the client is
built from ``KAIZEN_*``; the tracer provider is the one the distro configures). They are
``BaseInstrumentor`` subclasses, so this module needs ``opentelemetry-instrumentation``, which
is not a dependency of kaizen_sdk: nothing else imports it, and that package's own tool is what
loads it. A library that is not installed raises ``ModuleNotFoundError`` from ``instrument()``,
which the tool reports as "skipping".

Example:
    ```python
    from kaizen_sdk.integrations.entry_points import OpenAIInstrumentor

    OpenAIInstrumentor().instrument()      # same as kaizen_sdk.instrument(openai)
    OpenAIInstrumentor().uninstrument()
    ```
"""

from __future__ import annotations

import importlib
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

__all__ = ["LiteLLMInstrumentor", "OpenAIInstrumentor"]


class _KaizenInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """``kaizen_sdk.instrument(<library>)`` behind the ``BaseInstrumentor`` interface."""

    _library = ""
    _requirement = ""

    def instrumentation_dependencies(self) -> Collection[str]:
        """The library this instrumentor patches, as a requirement."""
        return (self._requirement,)

    def _instrument(self, **kwargs: Any) -> None:
        from kaizen_sdk.instrument import instrument

        module = importlib.import_module(self._library)  # ModuleNotFoundError: not installed
        instrument(module, tracer_provider=kwargs.get("tracer_provider"))

    def _uninstrument(self, **kwargs: Any) -> None:
        from kaizen_sdk.instrument import uninstrument

        uninstrument(importlib.import_module(self._library))


class OpenAIInstrumentor(_KaizenInstrumentor):
    """Trace the ``openai`` client library with kaizen_sdk (see `kaizen_sdk.instrument`)."""

    _library = "openai"
    _requirement = "openai >= 1.0"


class LiteLLMInstrumentor(_KaizenInstrumentor):
    """Trace ``litellm`` with kaizen_sdk (see `kaizen_sdk.instrument`)."""

    _library = "litellm"
    _requirement = "litellm >= 1.0"
