"""The record that travels beside a span, and the current ``@ct.task`` call.

A leaf (it imports nothing of kaizen_sdk at run time): the decorator fills a `CallRecord`
and sets `CURRENT`; integrations read `current_call`; the tracer pipeline and the delivery
engine carry the record on. `new_trace_id` makes the UUID the caller sees: version 7, which
sorts by time, so the server's indexes grow at their end.
"""

from __future__ import annotations

import os
import random
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any
from uuid import UUID

import msgspec

if TYPE_CHECKING:
    from kaizen_sdk.models import Prompt

__all__ = [
    "CURRENT",
    "UUID7_HEAD",
    "UUID7_VARIANT",
    "CallRecord",
    "CurrentCall",
    "ServedBy",
    "ServedMessages",
    "add_usage",
    "current_call",
    "fill_usage",
    "new_trace_id",
    "random_bits",
    "report_usage",
    "served_by",
    "uuid7_head",
]


class CallRecord(msgspec.Struct, gc=False):
    """What the CT exporter turns into a trace record, and a feedback entry when asked.

    It travels beside the span (never on it), so content reaches the CT server without
    reaching the application's own exporters. Latency comes from the span's own times
    unless ``latency_ms`` is set. ``inputs``/``output`` may be any value (or pre-encoded
    ``msgspec.Raw`` JSON); the exporter converts them safely in its own thread.

    Build it with keywords: ``CallRecord(trace_id=..., task=..., model=...)``. (It is a
    mutable ``msgspec.Struct`` that the garbage collector does not track: thousands can wait
    in the queue without slowing collections down. Never make one part of a cycle.)
    """

    trace_id: UUID | str
    task: str
    prompt_text: str | None = None
    response_text: str | None = None
    model: str | None = None
    tokens: int | None = None
    inputs: Any = None
    output: Any = None
    prompt_version_id: UUID | str | None = None
    prompt_version_number: int | None = None
    parent_trace_id: UUID | str | None = None
    log_feedback: bool = False
    metadata: dict[str, Any] | None = None
    error: str | None = None
    latency_ms: float | None = None
    # added later: kept last, since the decorator builds records positionally
    arm: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    tags: tuple[str, ...] | None = None
    prompt_is_default: bool = False
    """``prompt_text`` is the decorator's ``default_prompt`` (the developer's template): a
    task with no version yet takes it as version 1. Never set for the text of an LLM call."""
    input_tokens: int | None = None
    """Input tokens the provider reported (with ``output_tokens``: the trace's cost)."""
    output_tokens: int | None = None
    prompt_messages: Any = None
    """With ``prompt_is_default``: the default chat prompt's messages (version 1's)."""
    prompt_config: Any = None
    """With ``prompt_is_default``: the default prompt's model settings (version 1's)."""
    cached_input_tokens: int | None = None
    """The part of ``input_tokens`` read from the provider's prompt cache (a cheaper rate)."""
    usage_by_model: dict[str, dict[str, int]] | None = None
    """A ``@ct.task`` call whose LLM calls used several models: each model's token split
    (``model`` is then the first one), so the server prices every model at its own rate."""


# --- served prompts outside any @ct.task ----------------------------------------------------


class ServedBy(msgspec.Struct, frozen=True, gc=False):
    """Which task's served version (and rollout arm) made a call's messages, and with which
    variables: an instrumented call made with them is recorded as that task's trace."""

    task: str
    version_id: str | None = None
    version_number: int | None = None
    arm: str | None = None
    template: str | None = None
    variables: dict[str, Any] | None = None
    default: Any = None
    """The ``default`` prompt given to ``ct.prompt`` when it was served (no version yet): a
    new task takes it as version 1, as a decorator's ``default_prompt``."""


class ServedMessages(list):  # type: ignore[type-arg]
    """The rendered messages of a prompt served by ``ct.prompt``: a plain ``list`` of
    ``{"role", "content"}`` dicts to every library, carrying `ServedBy` as ``ct_served``."""

    __slots__ = ("ct_served",)

    def __init__(self, items: Any, served: ServedBy) -> None:
        super().__init__(items)
        self.ct_served = served


def served_by(messages: Any) -> ServedBy | None:
    """The `ServedBy` of messages rendered by a served prompt, else ``None``."""
    if type(messages) is ServedMessages:
        served: ServedBy = messages.ct_served
        return served
    return None


# --- the current call ----------------------------------------------------------------------


class CurrentCall:
    """The innermost running ``@ct.task`` call of this thread or asyncio task.

    ``usage`` gathers the token usage of the LLM calls made inside it (see `add_usage`):
    ``{model: [input_tokens, output_tokens, cached_input_tokens]}``, or ``None``.
    """

    __slots__ = ("prompt", "task", "trace_id", "usage")

    def __init__(self, task: str, trace_id: str, prompt: Prompt | None) -> None:
        self.task = task
        self.trace_id = trace_id
        self.prompt = prompt
        self.usage: dict[str, list[int]] | None = None

    def __repr__(self) -> str:
        return f"CurrentCall(task={self.task!r}, trace_id={self.trace_id!r})"


CURRENT: ContextVar[CurrentCall | None] = ContextVar("kaizen_sdk_current_call", default=None)
"""The innermost running ``@ct.task`` call (set and reset by the decorator only)."""


def current_call() -> CurrentCall | None:
    """Return the enclosing ``@ct.task`` call (task, trace id, prompt), or ``None``."""
    return CURRENT.get()


def add_usage(
    call: CurrentCall,
    model: str | None,
    input_tokens: int,
    output_tokens: int,
    cached_input_tokens: int | None = None,
) -> None:
    """Add one LLM call's usage to *call*, the ``@ct.task`` call that made it."""
    usage = call.usage
    if usage is None:
        usage = call.usage = {}
    counts = usage.get(model or "")
    if counts is None:
        usage[model or ""] = [input_tokens, output_tokens, cached_input_tokens or 0]
    else:
        counts[0] += input_tokens
        counts[1] += output_tokens
        counts[2] += cached_input_tokens or 0


def fill_usage(record: CallRecord, usage: dict[str, list[int]]) -> None:
    """Give a ``@ct.task`` call's record the model and token split of its LLM calls."""
    total_in = total_out = total_cached = 0
    for counts in usage.values():
        total_in += counts[0]
        total_out += counts[1]
        total_cached += counts[2]
    models = [m for m in usage if m]
    if record.model is None and models:
        record.model = models[0]
    record.input_tokens = total_in
    record.output_tokens = total_out
    record.tokens = total_in + total_out
    record.cached_input_tokens = total_cached or None
    if len(usage) > 1:
        record.usage_by_model = {
            m: {"input_tokens": c[0], "output_tokens": c[1], "cached_input_tokens": c[2]}
            for m, c in usage.items()
        }


def report_usage(
    model: str,
    *,
    input_tokens: int,
    output_tokens: int,
    cached_input_tokens: int | None = None,
) -> bool:
    """Report an LLM call made inside a ``@ct.task`` function, so its trace has a cost.

    Calls through an instrumented client (``ct.instrument(openai)``) are counted without
    this; use it for a client the SDK does not instrument. The server prices the call from
    *model* and the token split (*input_tokens* counts the *cached_input_tokens* too).
    Several calls add up. Returns ``False`` (and sends nothing) outside a ``@ct.task`` call;
    a negative or non-integer count raises `CTValidationError`.

    Example:
        ```python
        @ct.task("summarize_ticket")
        def summarize(ticket: str) -> str:
            answer = my_client.generate(ticket)
            ct.report_usage("gpt-4o-mini", input_tokens=answer.input_tokens,
                            output_tokens=answer.output_tokens)
            return answer.text
        ```
    """
    for name, value in (("input_tokens", input_tokens), ("output_tokens", output_tokens),
                        ("cached_input_tokens", cached_input_tokens or 0)):
        if type(value) is not int or value < 0:
            from kaizen_sdk.errors import CTValidationError  # only on misuse: a leaf module

            raise CTValidationError(f"{name} must be a non-negative int, got {value!r}.")
    call = CURRENT.get()
    if call is None:
        return False
    add_usage(call, model, input_tokens, output_tokens, cached_input_tokens)
    return True


# A private generator: an application that seeds `random` must not make trace ids repeat.
_rng = random.Random()
random_bits = _rng.getrandbits
"""``random_bits(k)``: k random bits from the SDK's own generator (trace and span ids)."""

UUID7_VARIANT = 0x8000000000000000
"""The RFC 9562 variant bits of a UUID's last 64 bits (``rand_b`` below them)."""

UUID7_HEAD: list[tuple[int, str]] = [(-1, "")]
"""``[(millisecond, text)]``: the first 19 characters of this millisecond's UUID7s (time,
version and a random ``rand_a``); one tuple, so a thread reads a consistent pair."""


def uuid7_head(ms: int) -> str:
    """The text of a UUID7 before its ``rand_b`` for millisecond *ms*, kept for the next
    ids of the same millisecond."""
    h = "%016x" % ((ms << 16) | 0x7000 | random_bits(12))  # one conversion, then slices
    head = f"{h[:8]}-{h[8:12]}-{h[12:]}-"
    UUID7_HEAD[0] = (ms, head)
    return head


def new_trace_id() -> str:
    """Return a fresh UUID7 as its canonical string: the Unix time in milliseconds, then 74
    random bits (cheap; safe after fork). Ids sort by the millisecond they were made in.

    Ids of one millisecond share its first 19 characters (``rand_a`` drawn once per
    millisecond, `uuid7_head`) and differ in 62 random bits: formatting only those halves the
    cost. (The decorator makes its ids the same way, inline.)
    """
    ms = time.time_ns() // 1_000_000
    cached = UUID7_HEAD[0]
    head = cached[1] if cached[0] == ms else uuid7_head(ms)
    h = "%016x" % (random_bits(62) | UUID7_VARIANT)
    return f"{head}{h[:4]}-{h[4:]}"


def _after_fork() -> None:
    _rng.seed()
    UUID7_HEAD[0] = (-1, "")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
