"""Property-based tests of the wire models: round trips, and hostile JSON at the decode boundary.

Strategies are derived from each Struct's own type information (``msgspec.inspect``), so a
field added to ``models.py`` is covered without touching this file.
"""

from __future__ import annotations

import contextlib
import functools
import json
import uuid
from datetime import timezone
from typing import Any

import httpx
import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaizen_sdk import models
from kaizen_sdk._http import BaseClient
from kaizen_sdk.errors import CTError

# slow: 136 hypothesis tests, ~25 s in all; with -n this file goes out first (tests/conftest.py)
pytestmark = [pytest.mark.unit, pytest.mark.slow, pytest.mark.timeout(120)]

STRUCTS: list[type[msgspec.Struct]] = sorted(
    (
        obj
        for name in models.__all__
        if isinstance(obj := getattr(models, name), type) and issubclass(obj, msgspec.Struct)
    ),
    key=lambda cls: cls.__name__,
)
RESPONSES = [cls for cls in STRUCTS if not mi.type_info(cls).forbid_unknown_fields]  # type: ignore[attr-defined]
LIST_RESPONSES: list[Any] = [
    list[models.Task],
    list[models.Prompt],
    list[models.TraceResult],
    list[models.FeedbackResult],
    list[models.Job],
]
DECODE_TARGETS: list[Any] = [*STRUCTS, *LIST_RESPONSES]

PROFILE = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
"""Any JSON value (ints limited to what JSON decoders in the wild produce)."""


def _strategy(t: mi.Type) -> st.SearchStrategy[Any]:
    """A strategy for valid Python values of the msgspec type *t*."""
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.IntType):
        lo = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else -(2**53))
        hi = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else 2**53)
        return st.integers(min_value=lo, max_value=hi)
    if isinstance(t, mi.FloatType):
        lo = t.ge if t.ge is not None else t.gt
        hi = t.le if t.le is not None else t.lt
        return st.floats(min_value=lo, max_value=hi, exclude_min=t.gt is not None,
                         exclude_max=t.lt is not None, allow_nan=False, allow_infinity=False)
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(t.values)
    if isinstance(t, mi.StrType):
        return st.text(min_size=t.min_length or 0, max_size=30)
    if isinstance(t, mi.UUIDType):
        return st.uuids()
    if isinstance(t, mi.DateTimeType):
        return st.datetimes(timezones=st.just(timezone.utc))
    if isinstance(t, mi.AnyType):
        return JSON
    if isinstance(t, mi.UnionType):
        return st.one_of(*(_strategy(member) for member in t.types))
    if isinstance(t, mi.ListType):
        return st.lists(_strategy(t.item_type), max_size=3)
    if isinstance(t, mi.DictType):
        return st.dictionaries(st.text(max_size=8), _strategy(t.value_type), max_size=3)
    if isinstance(t, mi.StructType):
        # deferred: models may nest each other (a Prompt's rollout holds a candidate Prompt)
        return st.deferred(lambda: _struct_strategy(t.cls))
    raise AssertionError(f"no strategy for {t!r}: extend _strategy")


@functools.cache
def _struct_strategy(cls: type[msgspec.Struct]) -> st.SearchStrategy[Any]:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    required = {f.name: _strategy(f.type) for f in info.fields if f.required}
    optional = {f.name: _strategy(f.type) for f in info.fields if not f.required}
    return st.fixed_dictionaries(required, optional=optional).map(lambda kw: cls(**kw))


def _client() -> BaseClient:
    return BaseClient(api_key="property-test-key", base_url="http://127.0.0.1:1")


def _through_client(client: BaseClient, body: bytes, into: Any) -> Any:
    request = httpx.Request("GET", "http://127.0.0.1:1/api/v1/x")
    return client._result(httpx.Response(200, content=body, request=request), into)


def _field_names(into: Any) -> list[str]:
    inner = into.__args__[0] if hasattr(into, "__args__") else into
    info = mi.type_info(inner)
    assert isinstance(info, mi.StructType)
    return [f.encode_name for f in info.fields]


# --- round trips -------------------------------------------------------------------------


def test_every_model_is_covered() -> None:
    defined = {
        obj
        for obj in vars(models).values()
        if isinstance(obj, type)
        and issubclass(obj, msgspec.Struct)
        and obj.__module__ == models.__name__
    }
    assert set(STRUCTS) == defined
    assert len(STRUCTS) >= 17
    assert {cls.__name__ for cls in RESPONSES} >= {"Task", "Prompt", "Job", "TraceResult"}


@pytest.mark.parametrize("cls", STRUCTS, ids=lambda c: c.__name__)
def test_encode_decode_round_trip(cls: type[msgspec.Struct]) -> None:
    @PROFILE
    @given(_struct_strategy(cls))
    def check(value: Any) -> None:
        wire = models.encode(value)
        assert models.decode(wire, cls) == value
        assert _through_client(_client(), wire, cls) == value
        assert models.encode(models.decode(wire, cls)) == wire

    check()


@pytest.mark.parametrize("cls", RESPONSES, ids=lambda c: c.__name__)
def test_response_models_ignore_unknown_fields(cls: type[msgspec.Struct]) -> None:
    known = set(_field_names(cls))

    @PROFILE
    @given(
        _struct_strategy(cls),
        st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k not in known), JSON,
                        max_size=3),
    )
    def check(value: Any, extra: dict[str, Any]) -> None:
        wire = msgspec.json.decode(models.encode(value))
        wire.update(extra)
        assert models.decode(json.dumps(wire), cls) == value

    check()


# --- hostile JSON through the client's decode boundary -----------------------------------


@pytest.mark.parametrize("into", DECODE_TARGETS, ids=str)
def test_arbitrary_json_gives_a_result_or_a_cterror(into: Any) -> None:
    names = _field_names(into)
    near_miss = st.dictionaries(st.sampled_from(names), JSON, max_size=len(names))
    client = _client()

    @PROFILE
    @given(st.one_of(JSON, near_miss, st.lists(near_miss, max_size=3)))
    def check(value: Any) -> None:
        body = json.dumps(value).encode()
        try:
            result = _through_client(client, body, into)
        except CTError as exc:
            assert type(exc) is CTError
            assert "does not match" in str(exc)
        else:
            assert isinstance(result, getattr(into, "__origin__", into))

    check()


@pytest.mark.parametrize("into", DECODE_TARGETS, ids=str)
def test_arbitrary_bytes_give_a_result_or_a_cterror(into: Any) -> None:
    client = _client()

    @PROFILE
    @given(st.binary(max_size=64) | st.text(max_size=40).map(str.encode))
    def check(body: bytes) -> None:
        with contextlib.suppress(CTError):
            _through_client(client, body, into)

    check()


@pytest.mark.parametrize("cls", STRUCTS, ids=lambda c: c.__name__)
def test_a_wrong_type_is_a_cterror_naming_the_field(cls: type[msgspec.Struct]) -> None:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    typed = [f for f in info.fields if not isinstance(f.type, mi.AnyType)]
    client = _client()

    @PROFILE
    @given(_struct_strategy(cls), st.sampled_from(typed))
    def check(value: Any, field: mi.Field) -> None:
        wire = msgspec.json.decode(models.encode(value))
        wire[field.encode_name] = [[True]]  # no typed field accepts a list of lists of bools
        with pytest.raises(CTError) as caught:
            _through_client(client, json.dumps(wire).encode(), cls)
        assert field.encode_name in str(caught.value)

    check()


def test_legacy_metadata_underscore_is_read() -> None:
    fid = uuid.uuid4()
    body = json.dumps({"id": str(fid), "metadata_": {"k": 1}}).encode()
    result = _through_client(_client(), body, models.FeedbackResult)
    assert (result.id, result.metadata, result.metadata_) == (fid, {"k": 1}, None)
