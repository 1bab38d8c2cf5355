"""kaizen_sdk: the Python SDK of the Kaizen continuous-tuning (CT) platform.

Example::

    import kaizen_sdk as ct

    @ct.task("summarize_ticket", default_prompt="Summarize: {{ ticket }}")
    def summarize(ticket: str, prompt: ct.Prompt = ct.PROMPT) -> str:
        return llm(prompt.render(ticket=ticket))

Public names are loaded on first use, so ``import kaizen_sdk`` stays cheap and never imports
``openai``, ``litellm``, ``anthropic``, ``google.genai`` or the local server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kaizen_sdk import _httpx_cli
from kaizen_sdk._version import __version__
from kaizen_sdk.errors import (
    CTAuthError,
    CTConnectionError,
    CTError,
    CTNotFoundError,
    CTRateLimitError,
    CTServerError,
    CTTimeoutError,
    CTValidationError,
)

# Eager, unlike the names below: importing the submodule ``kaizen_sdk.instrument`` binds the
# package attribute ``instrument`` to that module, which would hide a lazily loaded function.
from kaizen_sdk.instrument import instrument, uninstrument

# Before any module of ours imports httpx: its command-line client (click, rich) waits until run.
_httpx_cli.defer()

if TYPE_CHECKING:
    # What type checkers see; at run time these load on first use through __getattr__.
    from kaizen_sdk._context import context
    from kaizen_sdk._default import configure, flush, get_client, prefetch
    from kaizen_sdk._record import report_usage
    from kaizen_sdk._served import ServedPrompt, aprompt, prompt
    from kaizen_sdk.async_client import AsyncCTClient
    from kaizen_sdk.client import CTClient
    from kaizen_sdk.decorators import PROMPT, TaskRun, current_prompt, current_trace_id, task
    from kaizen_sdk.delivery import DeliveryStats
    from kaizen_sdk.models import (
        ApiKey,
        ApiKeyCreated,
        AuditEntry,
        ChatMessage,
        CostEstimate,
        FeedbackResult,
        Health,
        Job,
        OptimizeResult,
        Prompt,
        Rollout,
        Task,
        TraceResult,
        chat_prompt,
    )

__all__ = [
    "ApiKey",
    "ApiKeyCreated",
    "AsyncCTClient",
    "AuditEntry",
    "CTAuthError",
    "CTClient",
    "CTConnectionError",
    "CTError",
    "CTNotFoundError",
    "CTRateLimitError",
    "CTServerError",
    "CTTimeoutError",
    "CTValidationError",
    "ChatMessage",
    "CostEstimate",
    "DeliveryStats",
    "FeedbackResult",
    "Health",
    "Job",
    "OptimizeResult",
    "PROMPT",
    "Prompt",
    "Rollout",
    "ServedPrompt",
    "Task",
    "TaskRun",
    "TraceResult",
    "__version__",
    "aprompt",
    "chat_prompt",
    "configure",
    "context",
    "current_prompt",
    "current_trace_id",
    "flush",
    "get_client",
    "instrument",
    "prefetch",
    "prompt",
    "report_usage",
    "task",
    "uninstrument",
]

# name -> module that defines it; imported on first attribute access (PEP 562).
_LAZY: dict[str, str] = {
    "AsyncCTClient": "kaizen_sdk.async_client",
    "CTClient": "kaizen_sdk.client",
    "CostEstimate": "kaizen_sdk.models",
    "DeliveryStats": "kaizen_sdk.delivery",
    "PROMPT": "kaizen_sdk.decorators",
    "TaskRun": "kaizen_sdk.decorators",
    "configure": "kaizen_sdk._default",
    "context": "kaizen_sdk._context",
    "current_prompt": "kaizen_sdk.decorators",
    "current_trace_id": "kaizen_sdk.decorators",
    "flush": "kaizen_sdk._default",
    "get_client": "kaizen_sdk._default",
    "prefetch": "kaizen_sdk._default",
    "task": "kaizen_sdk.decorators",
    "ApiKey": "kaizen_sdk.models",
    "ApiKeyCreated": "kaizen_sdk.models",
    "AuditEntry": "kaizen_sdk.models",
    "FeedbackResult": "kaizen_sdk.models",
    "Health": "kaizen_sdk.models",
    "Job": "kaizen_sdk.models",
    "OptimizeResult": "kaizen_sdk.models",
    "Prompt": "kaizen_sdk.models",
    "Rollout": "kaizen_sdk.models",
    "Task": "kaizen_sdk.models",
    "TraceResult": "kaizen_sdk.models",
    "ChatMessage": "kaizen_sdk.models",
    "chat_prompt": "kaizen_sdk.models",
    "ServedPrompt": "kaizen_sdk._served",
    "prompt": "kaizen_sdk._served",
    "report_usage": "kaizen_sdk._record",
    "aprompt": "kaizen_sdk._served",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kaizen_sdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
