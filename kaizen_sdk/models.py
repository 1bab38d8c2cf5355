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
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

import msgspec

from kaizen_sdk import _recipe, _template

__all__ = [
    "MAX_PROMPT_CHARS",
    "PROMPT_REF_HEADER",
    "TERMINAL_JOB_STATUSES",
    "KEY_SCOPES",
    "MAX_RAMP_STEPS",
    "ActivateRequest",
    "ApiKey",
    "ApiKeyCreated",
    "AuditEntry",
    "ChatMessage",
    "CostEstimate",
    "JobCall",
    "ErrorBody",
    "EVALUATOR_KINDS",
    "Evaluator",
    "EvaluatorAgreement",
    "EvaluatorDay",
    "EvaluatorRequest",
    "EvaluatorUpdateRequest",
    "FeedbackRequest",
    "FeedbackResult",
    "Health",
    "IngestError",
    "IngestRequest",
    "IngestResult",
    "Job",
    "KeyCreateRequest",
    "LabelRequest",
    "OptimizeResult",
    "Prompt",
    "PromptVersionRequest",
    "Rollout",
    "RolloutArm",
    "RolloutDifference",
    "RolloutEvent",
    "RolloutGuards",
    "RolloutRequest",
    "RolloutServing",
    "RolloutStopRequest",
    "ScoreItem",
    "ScoreRequest",
    "Task",
    "TaskCosts",
    "TaskCreateRequest",
    "TaskUpdateRequest",
    "TraceRequest",
    "TraceResult",
    "UnpricedModel",
    "VersionCost",
    "chat_prompt",
    "decode",
    "decoder",
    "encode",
]

T = TypeVar("T")

Score = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
"""A quality score in [0, 1]; the local server rejects anything else with a 422."""

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]

MAX_PROMPT_CHARS = 200_000
"""Longest prompt text the local server stores; a longer one is answered with 422."""

PROMPT_REF_HEADER = "Kaizen-Trace-Prompt"
"""Header of a ``GET /api/v1/prompts/{task_id}`` answer. Its value ``version-id`` says the
server fills a trace's ``prompt_text`` from the version its ``prompt_version_id`` names, so a
trace of a call that ran on a served version may leave the template out."""

PromptText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PROMPT_CHARS)]
"""A prompt version's text: not empty, at most `MAX_PROMPT_CHARS` characters."""

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
    feedback_retention_days: int | None = None
    trace_retention_limit: int | None = None
    trace_retention_days: int | None = None
    evaluator_config: dict[str, Any] | None = None
    teacher_model: str | None = None
    judge_model: str | None = None
    module_type: str | None = None
    cost_budget: float | None = None
    github_repo: str | None = None
    github_base_branch: str | None = None
    prompt_path: str | None = None
    prompt_format: str | None = None
    daily_budget_usd: float | None = None
    """LLM spend allowed per UTC day for this task's jobs; ``None``: the server's default."""
    max_jobs_per_day: int | None = None
    """Threshold jobs allowed per UTC day; ``None``: the server's default, ``0``: none."""
    cooldown_minutes: float | None = None
    """Minutes between threshold jobs; ``None``: the server's default."""
    created_at: datetime | None = None
    feedback_count: int = 0
    last_optimization: datetime | None = None
    active_prompt_score: float | None = None
    threshold_progress: str | None = None
    threshold_waiting: str | None = None
    """Why a threshold job that the feedback count calls for has not started (a cool-down, the
    day's job count or budget); read-only, ``None`` when nothing waits."""


class Prompt(msgspec.Struct, kw_only=True, frozen=True):
    """One version of a task's prompt.

    A prompt made locally from ``default_prompt=`` has no ``id``, ``version_number=0`` and
    ``status="default"``.

    Example:
        ```python
        prompt = client.get_prompt("summarize_ticket")
        text = prompt.render(ticket="Printer on fire")
        ```
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
    rollout: RolloutServing | None = None
    """The task's running rollout, when the server has one: pick an arm with it locally."""
    verdict: str | None = None
    """The judged comparison of the job that made this version: ``better``, ``not_better``
    or ``worse`` than `baseline_version` (``None`` when it was not judged)."""
    baseline_version: int | None = None
    """The version ``eval_score`` was compared against (the active one when the job ran)."""
    baseline_score: float | None = None
    """The baseline's judged mean on the same sample: compare ``eval_score`` only with it."""
    eval_sample_size: int | None = None
    """How many held-out examples both were judged on."""
    messages: list[ChatMessage] | None = None
    """A chat version's messages (content templates with ``{{ name }}``); ``prompt_text`` is
    then their readable text. ``None``: a text version."""
    config: dict[str, Any] | None = None
    """The version's model settings (``model``, ``temperature``, ``max_tokens``, ``stop``,
    ``response_format``, ``tools``, any other provider keyword); ``None``: none."""
    labels: list[str] = []
    """The labels on this version: ``production`` when it is the active one, and any other
    label set on it (``staging``, ``eu``, ...)."""

    def render(self, **variables: Any) -> str:
        """Fill ``{{ name }}`` placeholders; a missing variable raises `CTValidationError`.

        So does a template past the rendering bounds (`kaizen_sdk._template`: at most 1,000
        placeholders and a result of at most 4,000,000 characters).
        """
        from kaizen_sdk.errors import CTValidationError

        def fill(name: str) -> str:
            if name not in variables:
                raise CTValidationError(
                    f"Prompt variable {name!r} is missing: pass {name}=... to render()."
                )
            return str(variables[name])

        try:
            return _template.render(self.prompt_text, fill)
        except _template.TemplateTooLarge as exc:
            raise CTValidationError(f"Prompt.render: {exc}.") from None

    @property
    def variables(self) -> list[str]:
        """The placeholder names in the prompt (its messages, else ``prompt_text``), in order
        of first appearance."""
        if self.messages is not None:
            found = [n for m in self.messages for n in _PLACEHOLDER.findall(m.content)]
            return list(dict.fromkeys(found))
        return list(dict.fromkeys(_PLACEHOLDER.findall(self.prompt_text)))

    def messages_for(self, **variables: Any) -> list[dict[str, str]]:
        """The chat messages with ``{{ name }}`` filled: ``[{"role": ..., "content": ...}]``.

        A text version is one ``user`` message of its rendered ``prompt_text``. A variable a
        message uses and *variables* lack raises `CTValidationError` naming it and the message.

        Example:
            ```python
            messages = prompt.messages_for(ticket="Printer on fire")
            ```
        """
        from kaizen_sdk.errors import CTValidationError

        if self.messages is None:
            return [{"role": "user", "content": self.render(**variables)}]
        rendered: list[dict[str, str]] = []
        for index, message in enumerate(self.messages):

            def fill(name: str, index: int = index) -> str:
                if name not in variables:
                    raise CTValidationError(
                        f"Prompt variable {name!r} (used in messages[{index}]) is missing:"
                        f" pass {name}=... to messages_for() or call_args()."
                    )
                return str(variables[name])

            try:
                rendered += _recipe.render_messages([message], fill)
            except _template.TemplateTooLarge as exc:
                raise CTValidationError(f"Prompt.messages_for: {exc}.") from None
        return rendered

    def call_args(self, **variables: Any) -> dict[str, Any]:
        """Keyword arguments for a chat-completion call: the settings and rendered messages.

        ``{**config, "messages": messages_for(**variables)}``, accepted unchanged by
        ``openai`` (``client.chat.completions.create(**prompt.call_args(...))``) and
        ``litellm.completion``. Without ``model`` in the version's settings, pass ``model=``
        to the call as well.

        Example:
            ```python
            reply = client.chat.completions.create(**prompt.call_args(ticket=ticket))
            ```
        """
        args: dict[str, Any] = dict(self.config or {})
        args["messages"] = self.messages_for(**variables)
        return args


class ChatMessage(msgspec.Struct, kw_only=True, frozen=True):
    """One message of a chat prompt: a role (``system``, ``developer``, ``user``,
    ``assistant`` or ``tool``) and its content template."""

    role: str
    content: str


def chat_prompt(
    messages: list[ChatMessage] | list[dict[str, str]],
    *,
    config: dict[str, Any] | None = None,
) -> Prompt:
    """A chat prompt made in code, e.g. a task's ``default_prompt``.

    Example:
        ```python
        prompt = ct.chat_prompt(
            [{"role": "system", "content": "You triage tickets."},
             {"role": "user", "content": "{{ ticket }}"}],
            config={"model": "gpt-4o-mini", "temperature": 0},
        )
        ```

    Raises `CTValidationError` naming a bad message or setting.
    """
    from kaizen_sdk.errors import CTValidationError

    try:
        parsed = msgspec.convert(messages, list[ChatMessage])
        if config is not None and not isinstance(config, dict):
            raise _recipe.BadRecipe("`config` must be a dict (a JSON object)")
        text = _recipe.check_recipe(parsed, config, None, max_chars=MAX_PROMPT_CHARS)
    except msgspec.ValidationError as exc:
        raise CTValidationError(f"chat_prompt: {exc}".replace("$", "messages")) from None
    except _recipe.BadRecipe as exc:
        raise CTValidationError(f"chat_prompt: {exc}.") from None
    return Prompt(
        prompt_text=text, messages=parsed, config=config, version_number=0, status="default"
    )


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
    comment: str | None = None
    correction: Any = None
    trace_id: UUID | None = None
    prompt_version_id: UUID | None = None
    """The prompt version that produced *output*, when the entry names one."""
    arm: str | None = None
    """``"active"`` or ``"candidate"`` when the version was served by a rollout."""

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


class JobCall(msgspec.Struct, kw_only=True, frozen=True):
    """One LLM call an optimization job made (``GET /api/v1/jobs/{job_id}/calls``)."""

    model: str
    purpose: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    """The cost of the usage the endpoint reported."""
    charged_usd: float = 0.0
    """What the call counts against the budgets (the estimate when more than reported)."""
    retries: int = 0
    usage_reported: bool = True


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
    arm: str | None = None
    error: bool | None = None
    user_id: str | None = None
    session_id: str | None = None
    tags: list[str] | None = None
    cost_usd: float | None = None
    """What the call cost in US dollars, from the server's price table; ``None`` when the
    model's price or the call's usage is unknown."""


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
    """Scores applied (or held until their trace arrives); ``None`` from a server that does not
    take ``scores`` in a batch."""


class UnpricedModel(msgspec.Struct, kw_only=True, frozen=True):
    """A model the server's recent traces name but its price table does not know."""

    model: str
    traces: int = 0
    """How many of the recent traces with tokens name it (they show no cost)."""


class VersionCost(msgspec.Struct, kw_only=True, frozen=True):
    """What one prompt version's calls cost within a `TaskCosts` window (``version_id``
    ``None``: calls that ran on no stored version)."""

    version_id: UUID | None = None
    version_number: int | None = None
    calls: int = 0
    """Calls counted (an LLM call made inside a priced ``@ct.task`` call is part of it)."""
    priced_calls: int = 0
    """Those with a cost (the others name a model no price table knows, or no tokens)."""
    cost_usd: float = 0.0
    """The priced calls' total, US dollars."""
    cost_per_call_usd: float | None = None
    """``cost_usd / priced_calls``; ``None`` without a priced call."""


class TaskCosts(msgspec.Struct, kw_only=True, frozen=True):
    """What a task's calls cost over a window (``GET /api/v1/tasks/{task_id}/costs``): the
    totals and each version's share, newest version first.

    The window is the last ``days`` days, read from at most the task's newest ``scanned``
    traces: ``complete`` is false when older traces of the window were left out.
    """

    task_id: UUID | None = None
    days: float = 7.0
    since: datetime | None = None
    calls: int = 0
    priced_calls: int = 0
    cost_usd: float = 0.0
    cost_per_call_usd: float | None = None
    scanned: int = 0
    complete: bool = True
    versions: list[VersionCost] = []


class Health(msgspec.Struct, kw_only=True, frozen=True):
    """The answer to ``GET /api/v1/health``."""

    status: str
    version: str | None = None


class ErrorBody(msgspec.Struct, kw_only=True):
    """The JSON body of every error response."""

    title: str
    detail: str | None = None


# --- rollouts (responses) ----------------------------------------------------------------


class RolloutServing(msgspec.Struct, kw_only=True, frozen=True):
    """What a process needs to split traffic: the candidate, its share and the hash salt.

    Carried as ``Prompt.rollout`` by ``GET /api/v1/prompts/{task_id}``; see
    ``kaizen_sdk._rollout.choose_arm``.
    """

    id: UUID
    candidate: Prompt
    share: float = 0.0
    salt: str = ""


class RolloutArm(msgspec.Struct, kw_only=True, frozen=True):
    """Live figures of one arm: scores (n, mean, its interval) and guard metrics."""

    version_id: UUID | None = None
    n: int = 0
    mean: float | None = None
    lower: float | None = None
    upper: float | None = None
    calls: int = 0
    errors: int = 0
    error_rate: float | None = None
    p95_latency_ms: float | None = None
    cost_per_call_usd: float | None = None
    """US dollars per call of the arm: the mean ``cost_usd`` of its priced traces; when none
    is priced (an unknown traced model), an estimate from their tokens at the mean of the
    input and output price of the version's ``config["model"]``; ``None`` before a call with
    tokens, or from a server that does not price calls."""


class RolloutDifference(msgspec.Struct, kw_only=True, frozen=True):
    """The sequential test on candidate - active: estimate, always-valid interval, p-value."""

    estimate: float | None = None
    lower: float | None = None
    upper: float | None = None
    p_value: float = 1.0
    significant: bool = False


class RolloutGuards(msgspec.Struct, kw_only=True, frozen=True):
    """Guard metrics of the candidate against the active and the breached ones."""

    error_rate_delta: float | None = None
    latency_p95_ratio: float | None = None
    error_margin: float | None = None
    latency_margin: float | None = None
    breached: list[str] = []
    cost_ratio: float | None = None
    """The candidate's cost per call over the active's (``None`` while either is unknown)."""
    max_cost_ratio: float | None = None
    """The rollout's cost guard (``None``: none): ``cost_per_call`` is breached above it."""


class RolloutEvent(msgspec.Struct, kw_only=True, frozen=True):
    """One audit-log entry: a start, ramp step, recommendation or decision, with statistics."""

    at: datetime | None = None
    event: str = ""
    share: float | None = None
    reason: str | None = None
    stats: dict[str, Any] | None = None


class Rollout(msgspec.Struct, kw_only=True, frozen=True):
    """A guarded rollout of a candidate prompt version (``GET /api/v1/rollouts/{task_id}``).

    ``state`` is ``running``, ``promoted``, ``rolled_back`` or ``overridden`` (a version was
    activated by hand while it ran); ``recommendation`` is set when
    the test or a guard decided but automatic promotion or rollback is off.
    """

    id: UUID
    task_id: UUID | None = None
    state: str = "running"
    active_version_id: UUID | None = None
    candidate_version_id: UUID | None = None
    share: float = 0.0
    ramp: list[float] = []
    step: int = 0
    salt: str | None = None
    min_samples: int = 0
    alpha: float | None = None
    max_duration: float | None = None
    auto_promote: bool = True
    auto_rollback: bool = True
    recommendation: str | None = None
    reason: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    active: RolloutArm = msgspec.field(default_factory=RolloutArm)
    candidate: RolloutArm = msgspec.field(default_factory=RolloutArm)
    difference: RolloutDifference = msgspec.field(default_factory=RolloutDifference)
    guards: RolloutGuards = msgspec.field(default_factory=RolloutGuards)
    audit: list[RolloutEvent] = []

    @property
    def is_running(self) -> bool:
        """True while the rollout still serves both arms."""
        return self.state == "running"


# --- keys and the audit log (responses) ---------------------------------------------------

KEY_SCOPES = ("ingest", "read", "admin")
"""Scopes of an API key: ``ingest`` sends traces, feedback and scores and reads prompts (what
an application process holds); ``read`` reads everything; ``admin`` does everything."""


class ApiKey(msgspec.Struct, kw_only=True, frozen=True):
    """A scoped API key of the CT server, as listed: never its secret."""

    id: UUID
    name: str
    scope: str
    created_at: datetime | None = None
    created_by: str | None = None
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        """True once the key was revoked (the server answers it with 401)."""
        return self.revoked_at is not None


class ApiKeyCreated(ApiKey, frozen=True):
    """A key just created: the one answer that carries its ``secret`` (shown once).

    The server keeps only a hash; the secret is left out of ``repr()``.
    """

    secret: str = ""

    def __repr__(self) -> str:
        return (
            f"ApiKeyCreated(id={self.id!r}, name={self.name!r}, scope={self.scope!r},"
            " secret='***')"
        )


class AuditEntry(msgspec.Struct, kw_only=True, frozen=True):
    """One state change on the CT server: what, when, by which key (``GET /api/v1/audit``).

    ``actor`` is the key's name (``bootstrap`` for the server's own key, ``system`` for what
    the server did by itself, such as a rollout decided by its test).
    """

    id: int
    at: datetime | None = None
    actor: str = ""
    action: str = ""
    task_id: UUID | None = None
    target: str | None = None
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
    # UNSET (never sent) rather than None, so servers that predate them never see these keys
    comment: str | msgspec.UnsetType | None = msgspec.UNSET
    correction: Any | msgspec.UnsetType = msgspec.UNSET
    prompt_version_id: UUID | msgspec.UnsetType | None = msgspec.UNSET
    """The prompt version that produced *output* (counts toward a running rollout)."""
    arm: str | msgspec.UnsetType | None = msgspec.UNSET
    """``"active"`` or ``"candidate"`` when the version was served by a rollout."""


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
    arm: str | None = None
    """``"active"`` or ``"candidate"`` when the version was served by a rollout."""
    error: bool | None = None
    """True when the call raised; a rollout's error-rate guard counts these."""
    # None (omitted on the wire) unless a ``ct.context`` block set them: servers that predate
    # them never see the keys otherwise
    user_id: str | None = None
    """The ``user_id`` of the ``ct.context`` the call ran in."""
    session_id: str | None = None
    """The ``session_id`` of the ``ct.context`` the call ran in."""
    tags: list[str] | None = None
    """The ``tags`` of the ``ct.context`` the call ran in."""
    prompt_is_default: bool = False
    """True when ``prompt_text`` is the task's ``default_prompt`` from the application's code
    (not a served version, not the text of one call): a task with no prompt version yet takes
    it as version 1. No other trace ever makes a version. Omitted on the wire when false."""
    input_tokens: int | None = None
    """Input tokens of the call (cached ones included), for its cost; servers since 0.x."""
    output_tokens: int | None = None
    """Output tokens of the call, for its cost."""
    cached_input_tokens: int | None = None
    """The part of `input_tokens` read from the provider's prompt cache (a cheaper rate)."""
    prompt_messages: list[ChatMessage] | None = None
    """With ``prompt_is_default``: the default prompt's chat messages (``prompt_text`` is their
    text), so version 1 is a chat version. Omitted on the wire unless set."""
    prompt_config: dict[str, Any] | None = None
    """With ``prompt_is_default``: the default prompt's model settings. Omitted unless set."""


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
    feedback_retention_days: int | None = None
    trace_retention_limit: int | None = None
    trace_retention_days: int | None = None
    evaluator_config: dict[str, Any] | None = None
    teacher_model: str | None = None
    judge_model: str | None = None
    module_type: str | None = None
    cost_budget: float | None = None
    github_repo: str | None = None
    github_base_branch: str | None = None
    prompt_path: str | None = None
    prompt_format: str | None = None
    prompt_text: PromptText | None = None
    daily_budget_usd: float | None = None
    max_jobs_per_day: int | None = None
    cooldown_minutes: float | None = None
    # UNSET (never sent) unless given, so servers that predate them never see these keys
    messages: list[ChatMessage] | msgspec.UnsetType | None = msgspec.UNSET
    """Version 1 as a chat prompt (``prompt_text`` is then left out)."""
    config: dict[str, Any] | msgspec.UnsetType | None = msgspec.UNSET
    """Version 1's model settings."""


class TaskUpdateRequest(
    msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """Body of ``PATCH /api/v1/tasks/{task_id}``: the settings to change, and only those.

    A field left out (``UNSET``) keeps its value; ``None`` (JSON ``null``) clears it
    (``feedback_threshold`` cannot be cleared). ``evaluator_config`` is merged into the stored
    object key by key (a key set to ``null`` is removed); ``rubric`` and ``task_model`` set
    one key of it (``None`` removes the key). An unknown field is a 422 naming it.
    """

    description: str | msgspec.UnsetType | None = msgspec.UNSET
    schema_json: dict[str, Any] | msgspec.UnsetType | None = msgspec.UNSET
    feedback_threshold: int | msgspec.UnsetType = msgspec.UNSET
    feedback_retention_limit: int | msgspec.UnsetType | None = msgspec.UNSET
    feedback_retention_days: int | msgspec.UnsetType | None = msgspec.UNSET
    trace_retention_limit: int | msgspec.UnsetType | None = msgspec.UNSET
    trace_retention_days: int | msgspec.UnsetType | None = msgspec.UNSET
    evaluator_config: dict[str, Any] | msgspec.UnsetType | None = msgspec.UNSET
    rubric: str | msgspec.UnsetType | None = msgspec.UNSET
    task_model: str | msgspec.UnsetType | None = msgspec.UNSET
    teacher_model: str | msgspec.UnsetType | None = msgspec.UNSET
    judge_model: str | msgspec.UnsetType | None = msgspec.UNSET
    module_type: str | msgspec.UnsetType | None = msgspec.UNSET
    cost_budget: float | msgspec.UnsetType | None = msgspec.UNSET
    github_repo: str | msgspec.UnsetType | None = msgspec.UNSET
    github_base_branch: str | msgspec.UnsetType | None = msgspec.UNSET
    prompt_path: str | msgspec.UnsetType | None = msgspec.UNSET
    prompt_format: str | msgspec.UnsetType | None = msgspec.UNSET
    daily_budget_usd: float | msgspec.UnsetType | None = msgspec.UNSET
    max_jobs_per_day: int | msgspec.UnsetType | None = msgspec.UNSET
    cooldown_minutes: float | msgspec.UnsetType | None = msgspec.UNSET


class ActivateRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/v1/prompts/{task_id}/activate``."""

    version_id: UUID


class ScoreRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/v1/traces/{trace_id}/score``."""

    score: Score
    scored_by: str = "sdk"
    comment: str | msgspec.UnsetType | None = msgspec.UNSET
    correction: Any | msgspec.UnsetType = msgspec.UNSET


class PromptVersionRequest(
    msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """Body of ``POST /api/v1/prompts/{task_id}/versions``: a hand-written prompt version.

    Give ``prompt_text`` (a text version) or ``messages`` (a chat version, whose
    ``prompt_text`` the server makes); ``config`` holds the model settings of either.
    """

    prompt_text: PromptText | None = None
    activate: bool = False
    messages: list[ChatMessage] | None = None
    config: dict[str, Any] | None = None


class LabelRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``PUT /api/v1/prompts/{task_id}/labels/{label}``: the version to label."""

    version_id: UUID


Share = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
"""A share of traffic in [0, 1]."""

MAX_RAMP_STEPS = 20
"""Most steps a rollout's ``ramp`` may have; a longer one is answered with 422 naming it."""


class RolloutRequest(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """Body of ``POST /api/v1/rollouts/{task_id}``: the candidate and how to roll it out.

    Give ``share`` (one step) or ``ramp`` (increasing shares, e.g. ``[0.05, 0.2, 0.5, 1.0]``);
    neither means ``[0.05, 0.2, 0.5, 1.0]``. Margins: ``error_margin`` is absolute (error rate),
    ``latency_margin`` relative (p95 latency); ``max_duration`` is in seconds;
    ``max_cost_ratio`` guards the cost per call.
    """

    candidate_version_id: UUID
    share: Share | None = None
    ramp: Annotated[list[Share], msgspec.Meta(max_length=MAX_RAMP_STEPS)] | None = None
    min_samples: Annotated[int, msgspec.Meta(ge=2, le=1_000_000)] = 100
    alpha: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = 0.05
    error_margin: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.02
    latency_margin: Annotated[float, msgspec.Meta(ge=0.0)] = 0.25
    max_duration: Annotated[float, msgspec.Meta(gt=0.0)] = 7 * 24 * 3600.0
    auto_promote: bool = True
    auto_rollback: bool = True
    max_cost_ratio: Annotated[float, msgspec.Meta(gt=0.0, le=1000.0)] | None = None
    """The cost guard: the candidate's cost per call may be at most this multiple of the
    active's (``1.0``: not dearer, ``0.5``: at most half). Breached, the candidate is rolled
    back even when it scores higher. ``None`` (the default): no cost guard."""


KeyName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class KeyCreateRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/v1/keys``: a name (letters, digits, ``._@-``, at most 64) and a
    scope."""

    name: KeyName
    scope: Literal["ingest", "read", "admin"]


class RolloutStopRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/v1/rollouts/{task_id}/stop``."""

    action: Literal["promote", "rollback"]


# --- online evaluators ---------------------------------------------------------------------

EVALUATOR_KINDS = ("llm_judge", "exact_match", "normalized_match", "regex", "json_schema",
                   "length")
"""What an evaluator does: an LLM judge, or a code check that needs no LLM."""

EvaluatorName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Rate = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Count = Annotated[int, msgspec.Meta(ge=0)]
Dollars = Annotated[float, msgspec.Meta(ge=0.0)]


class EvaluatorRequest(
    msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """Body of ``POST /api/v1/tasks/{task_id}/evaluators``: one online evaluator.

    ``llm_judge`` needs ``rubric``, ``judge_model`` and ``scale`` (the judge's ``[low, high]``,
    mapped to [0, 1]); ``regex`` needs ``pattern``; ``json_schema`` needs ``json_schema``;
    ``length`` needs ``min_length`` and/or ``max_length``; ``exact_match`` and
    ``normalized_match`` compare the output with the trace's correction. ``watch`` is ``all``
    (every trace) or ``rollout`` (only the arms of a running rollout). A judged score of at least
    ``pass_threshold`` counts as a pass when agreement with people is measured; below
    ``min_kappa`` (Cohen's κ, once 50 pairs exist) the evaluator stops feeding the loop.
    """

    name: EvaluatorName
    kind: Literal["llm_judge", "exact_match", "normalized_match", "regex", "json_schema",
                  "length"]
    rubric: str | None = None
    judge_model: str | None = None
    scale: list[float] | None = None
    pattern: str | None = None
    json_schema: dict[str, Any] | None = None
    min_length: Count | None = None
    max_length: Count | None = None
    sample_rate: Rate = 1.0
    daily_budget_usd: Dollars | None = None
    daily_calls: Count | None = None
    watch: Literal["all", "rollout"] = "all"
    pass_threshold: Rate = 0.5
    min_kappa: Annotated[float, msgspec.Meta(ge=-1.0, le=1.0)] | None = None
    enabled: bool = True


class EvaluatorUpdateRequest(
    msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """Body of ``PATCH /api/v1/tasks/{task_id}/evaluators/{evaluator}``: the fields to change
    (left out: kept; ``null``: cleared). The kind cannot change."""

    name: EvaluatorName | msgspec.UnsetType = msgspec.UNSET
    rubric: str | msgspec.UnsetType | None = msgspec.UNSET
    judge_model: str | msgspec.UnsetType | None = msgspec.UNSET
    scale: list[float] | msgspec.UnsetType | None = msgspec.UNSET
    pattern: str | msgspec.UnsetType | None = msgspec.UNSET
    json_schema: dict[str, Any] | msgspec.UnsetType | None = msgspec.UNSET
    min_length: Count | msgspec.UnsetType | None = msgspec.UNSET
    max_length: Count | msgspec.UnsetType | None = msgspec.UNSET
    sample_rate: Rate | msgspec.UnsetType = msgspec.UNSET
    daily_budget_usd: Dollars | msgspec.UnsetType | None = msgspec.UNSET
    daily_calls: Count | msgspec.UnsetType | None = msgspec.UNSET
    watch: Literal["all", "rollout"] | msgspec.UnsetType = msgspec.UNSET
    pass_threshold: Rate | msgspec.UnsetType = msgspec.UNSET
    min_kappa: Annotated[float, msgspec.Meta(ge=-1.0, le=1.0)] | msgspec.UnsetType | None = (
        msgspec.UNSET)
    enabled: bool | msgspec.UnsetType = msgspec.UNSET


class EvaluatorDay(msgspec.Struct, kw_only=True, frozen=True):
    """One evaluator's books for one UTC day: judge calls, dollars, outcomes."""

    day: str
    calls: int = 0
    spent_usd: float = 0.0
    judged: int = 0
    unjudged: int = 0
    skipped_budget: int = 0
    """Sampled traces not judged because the day's budget was spent."""


class EvaluatorAgreement(msgspec.Struct, kw_only=True, frozen=True):
    """How a judge agrees with people on traces both scored (a score >= threshold passes).

    ``accuracy``, ``kappa`` (Cohen's κ) and ``confusion`` (``[[both fail, judge passes a human
    fail], [judge fails a human pass, both pass]]``) are ``None`` below ``min_pairs`` pairs.
    """

    pairs: int = 0
    min_pairs: int = 50
    threshold: float = 0.5
    accuracy: float | None = None
    kappa: float | None = None
    confusion: list[list[int]] | None = None


class Evaluator(msgspec.Struct, kw_only=True, frozen=True):
    """An online evaluator of a task, with its status, today's books and its agreement.

    ``status`` is ``active``, ``disabled``, ``budget_spent`` (until 00:00 UTC),
    ``below_agreement`` (it still judges and reports, but feeds neither the optimizer nor
    rollouts) or ``no_endpoint``; ``status_reason`` says why in a sentence.
    """

    id: UUID
    task_id: UUID
    name: str
    kind: str
    rubric: str | None = None
    judge_model: str | None = None
    scale: list[float] | None = None
    pattern: str | None = None
    json_schema: dict[str, Any] | None = None
    min_length: int | None = None
    max_length: int | None = None
    sample_rate: float = 1.0
    daily_budget_usd: float | None = None
    daily_calls: int | None = None
    watch: str = "all"
    pass_threshold: float = 0.5
    min_kappa: float | None = None
    enabled: bool = True
    status: str = "active"
    status_reason: str | None = None
    today: EvaluatorDay | None = None
    days: list[EvaluatorDay] = msgspec.field(default_factory=list)
    """The books of the last days with activity, newest first (at most 7)."""
    agreement: EvaluatorAgreement | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


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
