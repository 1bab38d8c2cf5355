"""msgspec Structs for every object of the CT HTTP API, and the shared encoder/decoders.

Response models ignore unknown fields (servers evolve) and give every optional field a
default (older servers leave fields out). Request bodies send every field the
reference documents with a default (``source``, ``feedback_threshold``, ``scored_by``); only
trace and batch bodies leave out unset optional fields. Request models are
``forbid_unknown_fields`` so the local server rejects typos with a clear 422.
Decoding errors are raised as msgspec's own here; ``_http`` turns them into `CTError`.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime
from typing import Annotated, Any, TypeVar
from uuid import UUID

import msgspec

__all__ = [
    "TERMINAL_JOB_STATUSES",
    "ActivateRequest",
    "CostEstimate",
    "ErrorBody",
    "FeedbackRequest",
    "FeedbackResult",
    "Health",
    "IngestError",
    "IngestRequest",
    "IngestResult",
    "Job",
    "OptimizeResult",
    "Prompt",
    "ScoreItem",
    "ScoreRequest",
    "Task",
    "TaskCreateRequest",
    "TraceRequest",
    "TraceResult",
    "decode",
    "decoder",
    "encode",
]

T = TypeVar("T")

Score = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
"""A quality score in [0, 1]; the local server rejects anything else with a 422."""

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]

TERMINAL_JOB_STATUSES = frozenset(
    {"SUCCESS", "FAILURE", "PR_FAILED", "COMPLETED", "FAILED", "ERROR", "CANCELLED", "CANCELED"}
)
"""Job statuses (compared upper-cased) after which a job never changes again."""

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


# --- responses -------------------------------------------------------------------------


class Task(msgspec.Struct, kw_only=True, frozen=True):
    """A named LLM task whose prompt the CT server tunes."""

    id: UUID
    name: str
    description: str | None = None
    schema_json: dict[str, Any] | None = None
    feedback_threshold: int = 50
    feedback_retention_limit: int | None = None
    evaluator_config: dict[str, Any] | None = None
    teacher_model: str | None = None
    judge_model: str | None = None
    module_type: str | None = None
    cost_budget: float | None = None
    github_repo: str | None = None
    github_base_branch: str | None = None
    prompt_path: str | None = None
    prompt_format: str | None = None
    created_at: datetime | None = None
    feedback_count: int = 0
    last_optimization: datetime | None = None
    active_prompt_score: float | None = None
    threshold_progress: str | None = None


class Prompt(msgspec.Struct, kw_only=True, frozen=True):
    """One version of a task's prompt.

    A prompt made locally from ``default_prompt=`` has no ``id``, ``version_number=0`` and
    ``status="default"``.

    Example::

        prompt = client.get_prompt("summarize_ticket")
        text = prompt.render(ticket="Printer on fire")
    """

    id: UUID | None = None
    task_id: UUID | None = None
    version_number: int = 0
    prompt_text: str = ""
    eval_score: float | None = None
    status: str = "active"
    optimizer: str | None = None
    dspy_version: str | None = None
    created_at: datetime | None = None

    def render(self, **variables: Any) -> str:
        """Fill ``{{ name }}`` placeholders; a missing variable raises `CTValidationError`."""
        from kaizen_sdk.errors import CTValidationError

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in variables:
                raise CTValidationError(
                    f"Prompt variable {name!r} is missing: pass {name}=... to render()."
                )
            return str(variables[name])

        return _PLACEHOLDER.sub(fill, self.prompt_text)

    @property
    def variables(self) -> list[str]:
        """The placeholder names in ``prompt_text``, in order of first appearance."""
        return list(dict.fromkeys(_PLACEHOLDER.findall(self.prompt_text)))


class FeedbackResult(msgspec.Struct, kw_only=True, repr_omit_defaults=True):
    """A stored feedback entry. ``metadata`` is also read from the legacy ``metadata_``."""

    id: UUID
    task_id: UUID | None = None
    inputs: dict[str, Any] | None = None
    output: Any = None
    score: float | None = None
    source: str | None = None
    metadata: dict[str, Any] | None = None
    metadata_: dict[str, Any] | None = None
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.metadata is None and self.metadata_ is not None:
            self.metadata = self.metadata_
        self.metadata_ = None


class Job(msgspec.Struct, kw_only=True, frozen=True):
    """A prompt-optimization job. ``status`` is any string; see `is_terminal`."""

    id: UUID
    task_id: UUID | None = None
    prompt_version_id: UUID | None = None
    status: str = "PENDING"
    triggered_by: str | None = None
    feedback_count: int | None = None
    pr_url: str | None = None
    error_message: str | None = None
    job_metadata: dict[str, Any] | None = None
    progress_step: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    created_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        """True once the job can no longer change (success or failure, any spelling)."""
        return self.status.upper() in TERMINAL_JOB_STATUSES

    @property
    def is_success(self) -> bool:
        """True when the job finished successfully (``SUCCESS`` or ``completed``)."""
        return self.status.upper() in ("SUCCESS", "COMPLETED")


class CostEstimate(msgspec.Struct, kw_only=True, frozen=True):
    """What an optimization run is expected to cost."""

    estimated_cost_usd: float = 0.0
    estimated_llm_calls: int = 0
    train_size: int = 0
    val_size: int = 0
    max_trials: int | None = None
    teacher_model: str | None = None
    judge_model: str | None = None


class OptimizeResult(msgspec.Struct, kw_only=True, frozen=True):
    """The answer to ``trigger_optimization``: the queued job and its cost estimate."""

    job: Job
    cost_estimate: CostEstimate = msgspec.field(default_factory=CostEstimate)
    budget_warning: str | None = None


class TraceResult(msgspec.Struct, kw_only=True, frozen=True):
    """A stored trace of one LLM call or decorated task call."""

    id: UUID
    task_id: UUID | None = None
    prompt_text: str | None = None
    response_text: str | None = None
    model: str | None = None
    tokens: int | None = None
    latency_ms: float | None = None
    score: float | None = None
    scored_by: str | None = None
    prompt_version_id: UUID | None = None
    parent_trace_id: UUID | None = None
    metadata: dict[str, Any] | None = None
    created_at: datetime | None = None


class IngestError(msgspec.Struct, kw_only=True, frozen=True):
    """One rejected item of an ingest batch."""

    kind: str
    id: str | None = None
    detail: str = ""


class IngestResult(msgspec.Struct, kw_only=True, frozen=True):
    """The ``207`` answer to ``POST /api/v1/ingest``."""

    accepted: int = 0
    errors: list[IngestError] = []
    scores: int | None = None
    """Scores applied; ``None`` from a server that does not take ``scores`` in a batch."""


class Health(msgspec.Struct, kw_only=True, frozen=True):
    """The answer to ``GET /api/v1/health``."""

    status: str
    version: str | None = None


class ErrorBody(msgspec.Struct, kw_only=True):
    """The JSON body of every error response."""

    title: str
    detail: str | None = None


# --- requests --------------------------------------------------------------------------


class FeedbackRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/v1/feedback``. ``id`` is client-made so retries are idempotent.

    Every field is sent, defaults included (``source: "sdk"``): a deployed server's own
    defaults need not be the documented ones.
    """

    task_id: NonEmpty
    id: UUID | None = None
    inputs: dict[str, Any] | None = None
    output: Any = None
    score: Score | None = None
    source: str = "sdk"
    metadata: dict[str, Any] | None = None


class TraceRequest(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """Body of ``POST /api/v1/traces``. ``id`` is client-made so retries are idempotent."""

    task_id: NonEmpty
    id: UUID | None = None
    prompt_text: str | None = None
    response_text: str | None = None
    model: str | None = None
    tokens: int | None = None
    latency_ms: float | None = None
    prompt_version_id: UUID | None = None
    parent_trace_id: UUID | None = None
    metadata: dict[str, Any] | None = None


class ScoreItem(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One in-process score in an ingest batch (``run.score()``, ``response.ct_score()``).

    ``id`` is client-made, so a re-sent score is applied once.
    """

    id: UUID
    trace_id: UUID
    score: Score
    scored_by: str = "sdk"


class IngestRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Body of ``POST /api/v1/ingest``: traces, feedback and scores in one request.

    Servers apply ``scores`` after the traces of the same batch (a score may name one).
    """

    traces: list[TraceRequest] = []
    feedback: list[FeedbackRequest] = []
    scores: list[ScoreItem] = []


class TaskCreateRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/v1/tasks``; every field is sent (``feedback_threshold: 50``)."""

    name: NonEmpty
    description: str | None = None
    schema_json: dict[str, Any] | None = None
    feedback_threshold: Annotated[int, msgspec.Meta(ge=1)] = 50
    feedback_retention_limit: int | None = None
    evaluator_config: dict[str, Any] | None = None
    teacher_model: str | None = None
    judge_model: str | None = None
    module_type: str | None = None
    cost_budget: float | None = None
    github_repo: str | None = None
    github_base_branch: str | None = None
    prompt_path: str | None = None
    prompt_format: str | None = None


class ActivateRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/v1/prompts/{task_id}/activate``."""

    version_id: UUID


class ScoreRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/v1/traces/{trace_id}/score``."""

    score: Score
    scored_by: str = "sdk"


# --- encoding --------------------------------------------------------------------------

_ENCODER = msgspec.json.Encoder()


def encode(obj: Any) -> bytes:
    """Encode a Struct (or plain JSON-able value) to JSON bytes."""
    return _ENCODER.encode(obj)


@functools.cache
def decoder(into: Any) -> msgspec.json.Decoder[Any]:
    """Return the shared typed decoder for *into* (a type such as ``list[Task]``)."""
    return msgspec.json.Decoder(into)


def decode(data: bytes | str, into: type[T]) -> T:
    """Decode JSON into *into*; raises msgspec's ``DecodeError``/``ValidationError``."""
    typed: Any = into
    result: T = decoder(typed).decode(data)
    return result
