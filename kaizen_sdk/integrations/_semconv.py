"""The attribute and metric names the integrations write: the GenAI semantic conventions'
(current and deprecated), OpenAI's, OpenInference's, and the server and error keys.
"""

from __future__ import annotations

from opentelemetry.semconv._incubating.attributes import error_attributes as _err
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as _gen
from opentelemetry.semconv._incubating.attributes import openai_attributes as _oai
from opentelemetry.semconv._incubating.attributes import server_attributes as _srv
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as _gen_metrics

__all__ = [
    "ERROR_TYPE",
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
]

# gen_ai.* keys. Each exists in the semantic-conventions package this SDK is tested with;
# the getattr fallbacks keep older packages (which lack the newest keys) working.
# TODO: drop the fallbacks once the floor is opentelemetry-semantic-conventions 0.66b0.
GEN_AI_OPERATION_NAME: str = _gen.GEN_AI_OPERATION_NAME
GEN_AI_SYSTEM: str = _gen.GEN_AI_SYSTEM
GEN_AI_PROVIDER_NAME: str = getattr(_gen, "GEN_AI_PROVIDER_NAME", "gen_ai.provider.name")
GEN_AI_REQUEST_MODEL: str = _gen.GEN_AI_REQUEST_MODEL
GEN_AI_REQUEST_TEMPERATURE: str = _gen.GEN_AI_REQUEST_TEMPERATURE
GEN_AI_REQUEST_MAX_TOKENS: str = _gen.GEN_AI_REQUEST_MAX_TOKENS
GEN_AI_REQUEST_TOP_P: str = _gen.GEN_AI_REQUEST_TOP_P
GEN_AI_REQUEST_TOP_K: str = _gen.GEN_AI_REQUEST_TOP_K
GEN_AI_REQUEST_STREAM: str = getattr(_gen, "GEN_AI_REQUEST_STREAM", "gen_ai.request.stream")
GEN_AI_RESPONSE_MODEL: str = _gen.GEN_AI_RESPONSE_MODEL
GEN_AI_RESPONSE_ID: str = _gen.GEN_AI_RESPONSE_ID
GEN_AI_RESPONSE_FINISH_REASONS: str = _gen.GEN_AI_RESPONSE_FINISH_REASONS
GEN_AI_USAGE_INPUT_TOKENS: str = _gen.GEN_AI_USAGE_INPUT_TOKENS
GEN_AI_USAGE_OUTPUT_TOKENS: str = _gen.GEN_AI_USAGE_OUTPUT_TOKENS
GEN_AI_INPUT_MESSAGES: str = getattr(_gen, "GEN_AI_INPUT_MESSAGES", "gen_ai.input.messages")
GEN_AI_OUTPUT_MESSAGES: str = getattr(_gen, "GEN_AI_OUTPUT_MESSAGES", "gen_ai.output.messages")
GEN_AI_REQUEST_SEED: str = _gen.GEN_AI_REQUEST_SEED
GEN_AI_REQUEST_FREQUENCY_PENALTY: str = _gen.GEN_AI_REQUEST_FREQUENCY_PENALTY
GEN_AI_REQUEST_PRESENCE_PENALTY: str = _gen.GEN_AI_REQUEST_PRESENCE_PENALTY
GEN_AI_REQUEST_STOP_SEQUENCES: str = _gen.GEN_AI_REQUEST_STOP_SEQUENCES
GEN_AI_REQUEST_CHOICE_COUNT: str = _gen.GEN_AI_REQUEST_CHOICE_COUNT
GEN_AI_OUTPUT_TYPE: str = _gen.GEN_AI_OUTPUT_TYPE
GEN_AI_TOKEN_TYPE: str = _gen.GEN_AI_TOKEN_TYPE
# the default (pre-1.37) mode keeps openai-v2's deprecated gen_ai.openai.* names
OPENAI_REQUEST_SERVICE_TIER: str = _oai.OPENAI_REQUEST_SERVICE_TIER
OPENAI_RESPONSE_SERVICE_TIER: str = _oai.OPENAI_RESPONSE_SERVICE_TIER
OPENAI_RESPONSE_SYSTEM_FINGERPRINT: str = _oai.OPENAI_RESPONSE_SYSTEM_FINGERPRINT
# which OpenAI API a call used (``chat_completions`` / ``responses``): the operation is ``chat``
# for both, as GenAiOperationNameValues has no other name for a Responses call.
# TODO: drop the fallback once the floor's semantic-conventions package has it (0.66b0 does).
OPENAI_API_TYPE: str = getattr(_oai, "OPENAI_API_TYPE", "openai.api.type")
LEGACY_REQUEST_SERVICE_TIER: str = _gen.GEN_AI_OPENAI_REQUEST_SERVICE_TIER
LEGACY_RESPONSE_SERVICE_TIER: str = _gen.GEN_AI_OPENAI_RESPONSE_SERVICE_TIER
LEGACY_RESPONSE_SYSTEM_FINGERPRINT: str = _gen.GEN_AI_OPENAI_RESPONSE_SYSTEM_FINGERPRINT
GEN_AI_CLIENT_OPERATION_DURATION: str = _gen_metrics.GEN_AI_CLIENT_OPERATION_DURATION
GEN_AI_CLIENT_TOKEN_USAGE: str = _gen_metrics.GEN_AI_CLIENT_TOKEN_USAGE
# OpenInference (Arize Phoenix) keys; it has no semconv package we depend on.
# TODO: move to semconv constants if OTel adopts them (none as of semconv 1.37 / 0.66b0).
OPENINFERENCE_SPAN_KIND = "openinference.span.kind"
SERVER_ADDRESS: str = _srv.SERVER_ADDRESS
SERVER_PORT: str = _srv.SERVER_PORT
ERROR_TYPE: str = _err.ERROR_TYPE
