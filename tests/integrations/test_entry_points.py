"""The ``opentelemetry_instrumentor`` entry points, loaded and used as ``opentelemetry-instrument``
loads them: a `BaseInstrumentor` whose ``instrument()`` is ``kaizen_sdk.instrument(openai)``.

The entry point's value is read from pyproject.toml (an editable install's metadata can be
stale) and loaded through ``importlib.metadata.EntryPoint``, as the tool does.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai_standin import StandIn
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kaizen_sdk.instrument import instrumented
from kaizen_server import LocalServer

__all__: list[str] = []

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
GROUP = "opentelemetry_instrumentor"


def entry_point(name: str) -> importlib.metadata.EntryPoint:
    """The entry point *name* of the `GROUP` section of pyproject.toml."""
    text = PYPROJECT.read_text()
    section = text.split(f"[project.entry-points.{GROUP}]", 1)[1].split("\n[", 1)[0]
    match = re.search(rf'^{name}\s*=\s*"([^"]+)"', section, re.M)
    assert match is not None, f"no {name} entry point in {GROUP}"
    return importlib.metadata.EntryPoint(name=name, value=match.group(1), group=GROUP)


@pytest.fixture
def default_client(
    monkeypatch: pytest.MonkeyPatch, local_server: LocalServer
) -> Iterator[None]:
    """The process-wide client, built from KAIZEN_* on first use, closed afterwards."""
    from kaizen_sdk import _default

    monkeypatch.setattr(_default, "_client", None)
    monkeypatch.setenv("KAIZEN_API_KEY", local_server.api_key)
    monkeypatch.setenv("KAIZEN_BASE_URL", local_server.base_url)
    yield
    client = _default._client
    if client is not None:
        client.close()


def test_the_openai_entry_point_instruments_and_uninstruments(
    default_client: None, standin: StandIn,
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
        BaseInstrumentor,
    )

    cls = entry_point("kaizen_openai").load()
    assert issubclass(cls, BaseInstrumentor)
    instrumentor = cls()
    original = openai.resources.chat.completions.Completions.create
    tracer_provider, exporter = provider
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        assert instrumented(openai)
        assert openai.resources.chat.completions.Completions.create is not original
        with openai.OpenAI(base_url=standin.base_url, api_key="sk-test", max_retries=0) as oai:
            response: Any = oai.chat.completions.create(
                model="entry-point-model", messages=[{"role": "user", "content": "hi"}]
            )
    finally:
        instrumentor.uninstrument()
    assert response.choices[0].message.content == "echo: hi"
    assert isinstance(response.ct_trace_id, str)
    models = [s.attributes.get("gen_ai.request.model") for s in exporter.get_finished_spans()]
    assert models == ["entry-point-model"]
    assert not instrumented(openai)
    assert openai.resources.chat.completions.Completions.create is original


def test_a_library_that_is_not_installed_is_a_module_not_found_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # opentelemetry-instrument reports ModuleNotFoundError as "skipping", never as a failure
    cls = entry_point("kaizen_litellm").load()
    monkeypatch.setattr(cls, "_library", "kaizen_no_such_library")
    with pytest.raises(ModuleNotFoundError):
        cls().instrument(skip_dep_check=True)
