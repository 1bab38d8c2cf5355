"""Trace ids made in a new millisecond (every id, when calls take longer than one) and in
the same one: both are valid UUID7s of that millisecond, and ids of one millisecond share
its head."""

from __future__ import annotations

import uuid

import pytest

from kaizen_sdk import _record

pytestmark = [pytest.mark.unit]


def test_every_id_of_a_new_millisecond_and_of_the_same_one_is_a_uuid7_of_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1_733_600_000_000 * 1_000_000]
    monkeypatch.setattr(_record.time, "time_ns", lambda: now[0])
    monkeypatch.setattr(_record, "UUID7_HEAD", [(-1, "")])
    made: list[tuple[int, str]] = []
    for step in range(2000):
        if step % 2 == 0:  # a new millisecond every other id (and across the 16-bit edge)
            now[0] += 40_000_000 if step % 10 else 65_536_000_000
        ms = now[0] // 1_000_000
        made.append((ms, _record.new_trace_id()))
    for ms, text in made:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert parsed.int >> 80 == ms
    assert len({text for _ms, text in made}) == len(made)
    for (ms_a, a), (ms_b, b) in zip(made[::2], made[1::2], strict=True):
        assert ms_a == ms_b and a[:19] == b[:19]  # the second id reuses the head
    heads = {text[:19] for _ms, text in made[::2]}
    assert len(heads) == len(made) // 2  # each millisecond's own (time and rand_a)


def test_the_head_alone_is_the_same_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_record, "UUID7_HEAD", [(-1, "")])
    ms = 0x0193_A29C_B800
    head = _record.uuid7_head(ms)
    assert head.startswith("0193a29c-b800-7") and head.endswith("-")
    assert len(head) == 19 and _record.UUID7_HEAD[0] == (ms, head)
