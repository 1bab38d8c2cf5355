"""What the LLM-library integrations share, under one name (the modules below hold it by job).

The OpenTelemetry contrib split (instrumentor / patch / utils) is the model:

- `_call`: `start_call` opens the span of one LLM call and `TracedCall` ends it exactly once
  (span, GenAI metrics, CT record);
- `_stream` and `_response`: what the application receives (stream proxies that end the call
  when the stream ends; `TracedResponse` with ``ct_trace_id`` and ``ct_score``);
- `_chat`: chat-completion shaped prompts, responses and chunks (openai chat, litellm);
- `_task`: the CT task of a call that no ``@ct.task`` encloses;
- `_coexist`: other GenAI instrumentations around or beneath our call, and the in-call mark;
- `_patch`: wrapt patching that removes only our own wrappers;
- `_utils` and `_semconv`: settings, field readers, request attributes, attribute names.

The integration modules import from here; names stay where they were.
"""

from __future__ import annotations

from kaizen_sdk.integrations._call import (
    TracedCall,
    start_call,
)
from kaizen_sdk.integrations._chat import (
    ChatStreamAccumulator,
    chat_extract,
    chat_input_messages,
    chat_prompt,
)
from kaizen_sdk.integrations._coexist import (
    genai_patch,
    in_instrumented_call,
)
from kaizen_sdk.integrations._patch import (
    Switch,
    unwrap,
    wrap,
)
from kaizen_sdk.integrations._response import (
    TracedResponse,
    wrap_response,
)
from kaizen_sdk.integrations._semconv import (
    ERROR_TYPE,
    GEN_AI_CLIENT_OPERATION_DURATION,
    GEN_AI_CLIENT_TOKEN_USAGE,
    GEN_AI_INPUT_MESSAGES,
    GEN_AI_OPERATION_NAME,
    GEN_AI_OUTPUT_MESSAGES,
    GEN_AI_OUTPUT_TYPE,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_CHOICE_COUNT,
    GEN_AI_REQUEST_FREQUENCY_PENALTY,
    GEN_AI_REQUEST_MAX_TOKENS,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_REQUEST_PRESENCE_PENALTY,
    GEN_AI_REQUEST_SEED,
    GEN_AI_REQUEST_STOP_SEQUENCES,
    GEN_AI_REQUEST_STREAM,
    GEN_AI_REQUEST_TEMPERATURE,
    GEN_AI_REQUEST_TOP_K,
    GEN_AI_REQUEST_TOP_P,
    GEN_AI_RESPONSE_FINISH_REASONS,
    GEN_AI_RESPONSE_ID,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_SYSTEM,
    GEN_AI_TOKEN_TYPE,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    LEGACY_REQUEST_SERVICE_TIER,
    LEGACY_RESPONSE_SERVICE_TIER,
    LEGACY_RESPONSE_SYSTEM_FINGERPRINT,
    OPENAI_API_TYPE,
    OPENAI_REQUEST_SERVICE_TIER,
    OPENAI_RESPONSE_SERVICE_TIER,
    OPENAI_RESPONSE_SYSTEM_FINGERPRINT,
    OPENINFERENCE_SPAN_KIND,
    SERVER_ADDRESS,
    SERVER_PORT,
)
from kaizen_sdk.integrations._stream import (
    TracedAsyncStream,
    TracedStream,
    wrap_stream,
)
from kaizen_sdk.integrations._task import (
    resolve_task,
)
from kaizen_sdk.integrations._utils import (
    DEFAULT_TASK,
    Extracted,
    InstrumentSettings,
    request_attributes,
    rich,
    server_of,
    text_of,
)

__all__ = [
    "ChatStreamAccumulator",
    "DEFAULT_TASK",
    "ERROR_TYPE",
    "Extracted",
    "GEN_AI_CLIENT_OPERATION_DURATION",
    "GEN_AI_CLIENT_TOKEN_USAGE",
    "GEN_AI_INPUT_MESSAGES",
    "GEN_AI_OPERATION_NAME",
    "GEN_AI_OUTPUT_MESSAGES",
    "GEN_AI_OUTPUT_TYPE",
    "GEN_AI_PROVIDER_NAME",
    "GEN_AI_REQUEST_CHOICE_COUNT",
    "GEN_AI_REQUEST_FREQUENCY_PENALTY",
    "GEN_AI_REQUEST_MAX_TOKENS",
    "GEN_AI_REQUEST_MODEL",
    "GEN_AI_REQUEST_PRESENCE_PENALTY",
    "GEN_AI_REQUEST_SEED",
    "GEN_AI_REQUEST_STOP_SEQUENCES",
    "GEN_AI_REQUEST_STREAM",
    "GEN_AI_REQUEST_TEMPERATURE",
    "GEN_AI_REQUEST_TOP_K",
    "GEN_AI_REQUEST_TOP_P",
    "GEN_AI_RESPONSE_FINISH_REASONS",
    "GEN_AI_RESPONSE_ID",
    "GEN_AI_RESPONSE_MODEL",
    "GEN_AI_SYSTEM",
    "GEN_AI_TOKEN_TYPE",
    "GEN_AI_USAGE_INPUT_TOKENS",
    "GEN_AI_USAGE_OUTPUT_TOKENS",
    "InstrumentSettings",
    "LEGACY_REQUEST_SERVICE_TIER",
    "LEGACY_RESPONSE_SERVICE_TIER",
    "LEGACY_RESPONSE_SYSTEM_FINGERPRINT",
    "OPENAI_API_TYPE",
    "OPENAI_REQUEST_SERVICE_TIER",
    "OPENAI_RESPONSE_SERVICE_TIER",
    "OPENAI_RESPONSE_SYSTEM_FINGERPRINT",
    "OPENINFERENCE_SPAN_KIND",
    "SERVER_ADDRESS",
    "SERVER_PORT",
    "Switch",
    "TracedAsyncStream",
    "TracedCall",
    "TracedResponse",
    "TracedStream",
    "chat_extract",
    "chat_input_messages",
    "chat_prompt",
    "genai_patch",
    "in_instrumented_call",
    "request_attributes",
    "resolve_task",
    "rich",
    "server_of",
    "start_call",
    "text_of",
    "unwrap",
    "wrap",
    "wrap_response",
    "wrap_stream",
]
