"""The openai wrappers' look at other GenAI instrumentations' patches (beneath: on the
client's ``request``; around: on our patched method) follows patches made and removed
after the first call: what it worked out is reused only while the patched objects are the
same."""

from __future__ import annotations

import types
from typing import Any

import pytest
import wrapt

from kaizen_sdk.integrations import openai as kz_openai

pytestmark = [pytest.mark.unit]


def _genai_wrapper() -> Any:
    # a patch from a GenAI instrumentation package (as openinference/OpenLLMetry make them)
    namespace: dict[str, Any] = {"__name__": "opentelemetry.instrumentation.fake"}
    exec("def wrapper(wrapped, instance, args, kwargs):\n    return wrapped(*args, **kwargs)",
         namespace)
    return namespace["wrapper"]


class _Transport:
    def request(self, *args: Any, **kwargs: Any) -> str:
        return "sent"


class _Completions:
    def create(self, **kwargs: Any) -> str:
        return "made"


def test_patches_made_and_removed_after_the_first_call_are_seen() -> None:
    client = _Transport()
    instance = types.SimpleNamespace(_client=client)
    peers = kz_openai._peers_of(_Completions, "create")
    assert peers(instance) == (False, False)
    plain_request, plain_create = _Transport.request, _Completions.create
    try:
        _Transport.request = wrapt.FunctionWrapper(plain_request, _genai_wrapper())
        assert peers(instance) == (True, False)  # beneath, patched after our first call
        _Completions.create = wrapt.FunctionWrapper(plain_create, _genai_wrapper())
        assert peers(instance) == (True, True)  # and around us
        assert peers(instance) == (True, True)  # unchanged objects: the same answer
        _Transport.request = plain_request
        assert peers(instance) == (False, True)
    finally:
        _Transport.request = plain_request
        _Completions.create = plain_create
    assert peers(instance) == (False, False)
    # another client class (its own request method) is looked at on its own
    other = types.SimpleNamespace(_client=types.SimpleNamespace())
    assert peers(other) == (False, False)
