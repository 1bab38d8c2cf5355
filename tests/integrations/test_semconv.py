"""GenAI semantic conventions: the default and the latest experimental mode, content modes."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai_standin import StandIn

from kaizen_sdk._config import content_on_spans, genai_latest_mode, resolve_settings
from kaizen_sdk.integrations import _common

MESSAGES = [{"role": "user", "content": "hello there"}]
LATEST = {"OTEL_SEMCONV_STABILITY_OPT_IN": "http,gen_ai_latest_experimental"}
CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


@pytest.fixture
def client(standin: StandIn) -> Any:
    with openai.OpenAI(base_url=standin.base_url, api_key="sk-test", max_retries=0) as c:
        yield c


REQUEST = {
    "model": "m",
    "messages": MESSAGES,
    "seed": 42,
    "frequency_penalty": 0.25,
    "presence_penalty": -0.5,
    "stop": "END",
    "n": 1,
    "response_format": {"type": "json_object"},
    "service_tier": "flex",
}


def test_default_mode_keeps_gen_ai_system_and_the_openai_names_of_openai_v2(
    patch: Any, client: Any, standin: StandIn
) -> None:
    cap = patch(openai, latest=False)
    client.chat.completions.create(**REQUEST)
    attrs = dict(cap.only_span().attributes or {})
    assert attrs["gen_ai.system"] == attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.seed"] == 42
    assert attrs["gen_ai.request.frequency_penalty"] == 0.25
    assert attrs["gen_ai.request.presence_penalty"] == -0.5
    assert attrs["gen_ai.request.stop_sequences"] == ("END",)
    assert "gen_ai.request.choice.count" not in attrs  # n=1 is the default
    assert attrs["gen_ai.output.type"] == "json"
    assert attrs["gen_ai.openai.request.service_tier"] == "flex"
    assert attrs["gen_ai.openai.response.service_tier"] == "flex"
    assert attrs["gen_ai.openai.response.system_fingerprint"] == "fp_standin"
    assert not any(k.startswith("openai.") for k in attrs)


def test_latest_mode_drops_gen_ai_system_and_uses_the_openai_namespace(
    patch: Any, client: Any
) -> None:
    cap = patch(openai, latest=True)
    stream = client.chat.completions.create(
        **{**REQUEST, "stop": ["a", "b"], "n": 2, "response_format": {"type": "text"}},
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    attrs = dict(cap.only_span().attributes or {})
    assert "gen_ai.system" not in attrs and attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.stop_sequences"] == ("a", "b")
    assert attrs["gen_ai.request.choice.count"] == 2
    assert attrs["gen_ai.output.type"] == "text"
    assert attrs["openai.request.service_tier"] == "flex"
    assert attrs["openai.response.service_tier"] == "flex"
    assert attrs["openai.response.system_fingerprint"] == "fp_standin"
    assert not any(k.startswith("gen_ai.openai.") for k in attrs)


def test_parameters_not_given_add_nothing(patch: Any, client: Any) -> None:
    cap = patch(openai, latest=True)
    client.chat.completions.create(model="m", messages=MESSAGES, service_tier="auto")
    attrs = dict(cap.only_span().attributes or {})
    added = {"gen_ai.request.seed", "gen_ai.request.stop_sequences", "gen_ai.output.type",
             "gen_ai.request.frequency_penalty", "gen_ai.request.presence_penalty",
             "openai.request.service_tier"}
    assert added & set(attrs) == set()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        ({CONTENT: "true"}, True),
        ({CONTENT: "SPAN_ONLY"}, False),  # a latest-mode word means nothing in the default
        ({**LATEST, CONTENT: "SPAN_ONLY"}, True),
        ({**LATEST, CONTENT: "span_and_event"}, True),
        ({**LATEST, CONTENT: "EVENT_ONLY"}, False),
        ({**LATEST, CONTENT: "NO_CONTENT"}, False),
        ({**LATEST, CONTENT: "true"}, False),  # the latest mode rejects the old word
    ],
)
def test_content_capture_modes(env: dict[str, str], expected: bool) -> None:
    assert content_on_spans(env) is expected
    settings = resolve_settings(api_key="k", environ=env)
    assert settings.capture_message_content_on_spans is expected


def test_kaizen_capture_content_false_keeps_content_off_every_span() -> None:
    env = {**LATEST, CONTENT: "SPAN_ONLY", "KAIZEN_CAPTURE_CONTENT": "false"}
    assert resolve_settings(api_key="k", environ=env).capture_message_content_on_spans is False
    given = resolve_settings(api_key="k", capture_content=False, environ={CONTENT: "true"})
    assert given.capture_message_content_on_spans is False


def test_latest_mode_is_read_from_the_opt_in_list() -> None:
    assert genai_latest_mode(LATEST) is True
    assert genai_latest_mode({"OTEL_SEMCONV_STABILITY_OPT_IN": "http"}) is False
    assert genai_latest_mode({}) is False


def test_content_in_latest_mode_goes_on_the_span(patch: Any, client: Any) -> None:
    cap = patch(openai, latest=True, capture_on_spans=True)
    client.chat.completions.create(model="m", messages=MESSAGES)
    attrs = dict(cap.only_span().attributes or {})
    assert json.loads(str(attrs["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "hello there"}]}
    ]
    assert "echo: hello there" in str(attrs["gen_ai.output.messages"])


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, "json"),
        ({"response_format": "text"}, "text"),
        ({"text": {"format": {"type": "json_schema"}}}, "json"),  # the Responses API
        ({"response_format": dict}, "json"),  # parse(response_format=SomeModel)
        ({}, None),
    ],
)
def test_output_type(given: dict[str, Any], expected: str | None) -> None:
    attrs = _common.request_attributes(given, (), openai=True, latest=True)
    assert attrs.get("gen_ai.output.type") == expected
