"""The CT id of an OTLP span is ``uuid5(OTLP_NAMESPACE, trace_id + span_id)``: the same in every
release (a re-sent span stays one trace), however `trace_id_of` builds it."""

from __future__ import annotations

import copy
import os
import pickle
import uuid

from kaizen_server.api.otlp import OTLP_NAMESPACE, trace_id_of


def test_trace_ids_are_the_rfc_uuid5_of_the_span_ids() -> None:
    pairs = [(os.urandom(16).hex(), os.urandom(8).hex()) for _ in range(500)]
    pairs += [("f" * 32, "f" * 16), ("0" * 31 + "1", "0" * 15 + "1")]
    for trace_id, span_id in pairs:
        made = trace_id_of(trace_id, span_id)
        expected = uuid.uuid5(OTLP_NAMESPACE, trace_id + span_id)
        assert made == expected and hash(made) == hash(expected)
        assert str(made) == str(expected) and made.version == 5
        assert made.variant == uuid.RFC_4122 and made.is_safe is uuid.SafeUUID.unknown
        assert pickle.loads(pickle.dumps(made)) == expected == copy.copy(made)


def test_a_known_span_keeps_its_id() -> None:
    # pinned: the id stored for this span by every release since OTLP ingest shipped
    made = trace_id_of("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert str(made) == "07b84b85-4dba-522c-b890-2fa60a451a0a"
