"""Metric 4: decoding ``list_tasks`` answers and encoding feedback bodies.

Three ways to do the same work, timed alternately:

- ``kaizen``: the SDK's msgspec Structs and shared typed decoder/encoder (`kaizen_sdk.models`);
- ``pydantic``: pydantic v2 models with the same fields (``TypeAdapter.validate_json`` and
  ``model_dump_json``);
- ``json_dataclass``: the standard ``json`` module plus dataclasses, converting UUIDs and
  datetimes by hand so all three end with the same typed objects.

Decoding takes the JSON bytes of a ``GET /api/v1/tasks`` answer (1 and 1,000 tasks, every
field filled) to typed objects. Encoding builds a feedback request from the user's arguments
and encodes it to JSON bytes, as ``log_feedback`` does for each call.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import uuid
import warnings
from datetime import datetime, timezone
from typing import Any

from benchmarks._harness import Contender, Metric, alternate, sync_batch

__all__ = ["run"]

def _task_doc(i: int) -> dict[str, Any]:
    return {
        "id": str(uuid.UUID(int=i + 1)),
        "name": f"task_{i}",
        "description": f"Summarize support ticket number {i} in one sentence.",
        "schema_json": {"type": "object", "properties": {"ticket": {"type": "string"}}},
        "feedback_threshold": 50,
        "feedback_retention_limit": 1000,
        "evaluator_config": {"kind": "judge", "rubric": "faithful and short"},
        "teacher_model": "gpt-4o",
        "judge_model": "gpt-4o-mini",
        "module_type": "predict",
        "cost_budget": 5.0,
        "github_repo": "acme/support-bot",
        "github_base_branch": "main",
        "prompt_path": f"prompts/task_{i}.txt",
        "prompt_format": "text",
        "created_at": "2026-01-02T03:04:05.123456Z",
        "feedback_count": i % 97,
        "last_optimization": "2026-02-03T04:05:06Z",
        "active_prompt_score": 0.875,
        "threshold_progress": f"{i % 50}/50",
        "server_only_field": "servers add fields; decoders must ignore them",
    }


def _tasks_json(n: int) -> bytes:
    return json.dumps([_task_doc(i) for i in range(n)]).encode()


# --- json + dataclasses -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _TaskDC:
    id: uuid.UUID
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


_DC_FIELDS = frozenset(f.name for f in dataclasses.fields(_TaskDC))


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


def _decode_json_dc(data: bytes) -> list[_TaskDC]:
    out = []
    for doc in json.loads(data):
        kw = {k: v for k, v in doc.items() if k in _DC_FIELDS}
        kw["id"] = uuid.UUID(kw["id"])
        kw["created_at"] = _dt(kw.get("created_at"))
        kw["last_optimization"] = _dt(kw.get("last_optimization"))
        out.append(_TaskDC(**kw))
    return out


@dataclasses.dataclass(slots=True)
class _FeedbackDC:
    task_id: str
    id: uuid.UUID | None = None
    inputs: dict[str, Any] | None = None
    output: Any = None
    score: float | None = None
    source: str = "sdk"
    metadata: dict[str, Any] | None = None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, datetime):
        return obj.isoformat()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _encode_json_dc(args: dict[str, Any]) -> bytes:
    body = _FeedbackDC(**args)
    doc = {k: v for k, v in dataclasses.asdict(body).items() if v is not None}
    return json.dumps(doc, default=_json_default, separators=(",", ":")).encode()


# --- the run ------------------------------------------------------------------------------

_FEEDBACK_ARGS: dict[str, Any] = {
    "task_id": "summarize_ticket",
    "inputs": {"ticket": "The printer on floor 3 is on fire again. " * 4, "priority": "high"},
    "output": "A printer on floor 3 is burning; this is a repeat incident.",
    "score": 0.9,
    "source": "human",
    "metadata": {"session_id": "abc123", "reviewer": "ana", "latency_ms": 812.5},
}


def _peer_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _pydantic_task_model(pydantic: Any) -> Any:
    class TaskModel(pydantic.BaseModel):  # type: ignore[misc]
        model_config = pydantic.ConfigDict(frozen=True, extra="ignore")
        id: uuid.UUID
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

    return TaskModel


def run(quick: bool) -> list[Metric]:
    """Time decode (1 and 1,000 tasks) and feedback encode: msgspec vs pydantic vs json."""
    from kaizen_sdk import models

    rounds = 3 if quick else 9
    args = dict(_FEEDBACK_ARGS)
    feedback_id = uuid.uuid4()
    decode_tasks = models.decoder(list[models.Task]).decode

    def encode_kaizen() -> bytes:
        return models.encode(models.FeedbackRequest(id=feedback_id, **args))

    pydantic_note: str | None = None
    decode_pyd: Any = None
    encode_pyd: Any = None
    try:
        import pydantic

        with warnings.catch_warnings():
            # "schema_json" shadows a deprecated BaseModel method; the wire name must stay.
            warnings.simplefilter("ignore", UserWarning)
            task_model = _pydantic_task_model(pydantic)

        class FeedbackModel(pydantic.BaseModel):
            model_config = pydantic.ConfigDict(extra="forbid")
            task_id: str = pydantic.Field(min_length=1)
            id: uuid.UUID | None = None
            inputs: dict[str, Any] | None = None
            output: Any = None
            score: float | None = pydantic.Field(default=None, ge=0.0, le=1.0)
            source: str = "sdk"
            metadata: dict[str, Any] | None = None

        decode_pyd = pydantic.TypeAdapter(list[task_model]).validate_json  # type: ignore[valid-type]

        def encode_pyd_fn() -> bytes:
            return FeedbackModel(id=feedback_id, **args).model_dump_json(exclude_none=True).encode()

        encode_pyd = encode_pyd_fn
    except Exception as exc:  # the peer is optional
        pydantic_note = f"pydantic not measured: {_peer_error(exc)}"

    def encode_json() -> bytes:
        return _encode_json_dc({"id": feedback_id, **args})

    metrics: list[Metric] = []
    for n, name, calls in ((1, "decode_tasks_1_us", 2000), (1000, "decode_tasks_1000_us", 12)):
        data = _tasks_json(n)
        decoded = decode_tasks(data)
        assert len(decoded) == n and decoded[-1].created_at == datetime(
            2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc
        )
        assert _decode_json_dc(data)[-1].created_at == decoded[-1].created_at
        contenders = [
            Contender("kaizen", sync_batch(functools.partial(decode_tasks, data))),
            Contender("json_dataclass", sync_batch(functools.partial(_decode_json_dc, data))),
        ]
        if decode_pyd is not None:
            assert decode_pyd(data)[-1].created_at == decoded[-1].created_at
            pyd = sync_batch(functools.partial(decode_pyd, data))
            contenders.append(Contender("pydantic", pyd))
        timings = alternate(contenders, calls=calls if not quick else max(1, calls // 5),
                            rounds=rounds)
        what = f"JSON answer of {n} task(s), {len(data):,} bytes, to typed objects."
        metrics.append(_metric(name, "µs/op", timings, pydantic_note, what))

    # Every way must produce the same bytes' meaning before we time it.
    ours = json.loads(encode_kaizen())
    assert json.loads(encode_json()) == ours, (json.loads(encode_json()), ours)
    contenders = [
        Contender("kaizen", sync_batch(encode_kaizen)),
        Contender("json_dataclass", sync_batch(encode_json)),
    ]
    if encode_pyd is not None:
        assert json.loads(encode_pyd()) == ours
        contenders.append(Contender("pydantic", sync_batch(encode_pyd)))
    timings = alternate(contenders, calls=1000 if quick else 5000, rounds=rounds)
    metrics.append(_metric("encode_feedback_us", "µs/op", timings, pydantic_note,
                           f"Build and encode one feedback body ({len(encode_kaizen())} bytes)."))
    return metrics


def _metric(name: str, unit: str, timings: dict[str, Any], pydantic_note: str | None,
            what: str) -> Metric:
    notes = [what]
    if pydantic_note:
        notes.append(pydantic_note)
    return Metric(
        name=name,
        unit=unit,
        better="lower",
        kaizen=timings["kaizen"].median,
        peers={
            "pydantic": timings["pydantic"].median if "pydantic" in timings else None,
            "json_dataclass": timings["json_dataclass"].median,
        },
        notes=notes,
        spread={k: t.spread for k, t in timings.items()},
    )
