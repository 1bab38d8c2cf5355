"""`resolve_task` walks the stack for the calling module only when it must: a ``task_map``
entry or the ``ct.context`` block answers without it."""

from __future__ import annotations

from types import FrameType
from typing import Any

import pytest

import kaizen_sdk as ct
from kaizen_sdk.integrations._task import caller_frame, resolve_task

pytestmark = [pytest.mark.unit]

SUMMARIZE_INVOICE = "Summarize this invoice"


class _Frames:
    def __init__(self) -> None:
        self.asked = 0

    def __call__(self) -> FrameType | None:
        self.asked += 1
        return caller_frame()


def test_a_task_map_entry_answers_without_the_frame() -> None:
    frames = _Frames()
    assert resolve_task(["hello", "You are terse."], {"You are terse.": "t"}, frames) == "t"
    assert frames.asked == 0


def test_the_context_block_answers_without_the_frame() -> None:
    frames = _Frames()
    with ct.context(task="from_context"):
        assert resolve_task(["hello"], {}, frames) == "from_context"
    assert frames.asked == 0


def test_a_prompt_constant_is_found_through_the_frame() -> None:
    frames = _Frames()
    assert resolve_task([SUMMARIZE_INVOICE], {}, frames) == "summarize_invoice"
    assert frames.asked == 1
    # renamed by the constant's name
    assert resolve_task([SUMMARIZE_INVOICE], {"SUMMARIZE_INVOICE": "bills"}, frames) == "bills"
    assert frames.asked == 2


def test_no_text_no_frame() -> None:
    frames = _Frames()
    assert resolve_task([], {}, frames) is None
    assert frames.asked == 0


def _frame_walks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the stack walks `caller_frame` starts (its ``sys._getframe`` calls)."""
    import sys

    real = sys._getframe
    walks: list[int] = []

    def counting(depth: int = 0) -> Any:
        if real(1).f_code.co_name == "caller_frame":
            walks.append(1)
        return real(depth + 1)

    monkeypatch.setattr(sys, "_getframe", counting)
    return walks


def _start(task_map: dict[str, str], texts: list[str]) -> Any:
    from opentelemetry.trace import NoOpTracer

    from kaizen_sdk.integrations._common import InstrumentSettings, start_call

    settings = InstrumentSettings(task_map=task_map, attach=lambda span, record: None)
    return start_call(NoOpTracer(), settings, operation="chat", provider="openai", model="m",
                      stream=False, params={}, prompt_text=texts[0], task_texts=texts)


def test_a_call_that_task_map_names_walks_no_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    walks = _frame_walks(monkeypatch)
    call = _start({"You are terse.": "t"}, ["hello", "You are terse."])
    assert call is not None and call.task == "t"
    assert walks == []
    call = _start({}, [SUMMARIZE_INVOICE])  # only the calling module's constant names it
    assert call is not None and call.task == "summarize_invoice"
    assert walks == [1]
