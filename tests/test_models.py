"""Wire models: tolerant decoding, the ``metadata_`` alias, job states, prompt rendering."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import msgspec
import pytest

from kaizen_sdk.errors import CTValidationError
from kaizen_sdk.models import (
    FeedbackRequest,
    FeedbackResult,
    Job,
    OptimizeResult,
    Prompt,
    Task,
    decode,
    encode,
)

pytestmark = pytest.mark.unit

ID = "6f1c3c9e-6c0a-4f57-9a53-0f6f7f6d8e5c"
TASK_ID = "3b4e1f2a-1111-4222-8333-944445555666"


def test_feedback_metadata_is_read_from_legacy_metadata_underscore() -> None:
    body = f'{{"id": "{ID}", "task_id": "{TASK_ID}", "metadata_": {{"session": "abc"}}}}'
    result = decode(body, FeedbackResult)
    assert result.metadata == {"session": "abc"}
    assert result.metadata_ is None
    assert result.id == uuid.UUID(ID)
    assert result.task_id == uuid.UUID(TASK_ID)


def test_feedback_metadata_wins_over_metadata_underscore() -> None:
    body = f'{{"id": "{ID}", "metadata": {{"a": 1}}, "metadata_": {{"b": 2}}}}'
    assert decode(body, FeedbackResult).metadata == {"a": 1}


def test_unknown_fields_are_ignored_and_missing_optional_ones_default() -> None:
    body = (
        f'{{"id": "{ID}", "name": "summarize_ticket", "brand_new_field": [1, 2],'
        ' "created_at": "2026-11-29T08:00:00Z"}'
    )
    task = decode(body, Task)
    assert task.name == "summarize_ticket"
    assert task.feedback_threshold == 50
    assert task.feedback_count == 0
    assert task.description is None
    assert task.created_at == datetime(2026, 11, 29, 8, 0, tzinfo=timezone.utc)


def test_wrong_field_type_names_the_field() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.version_number"):
        decode(f'{{"id": "{ID}", "version_number": "three"}}', Prompt)


def test_optimize_result_nests_job_and_cost_estimate() -> None:
    body = (
        f'{{"job": {{"id": "{ID}", "status": "PENDING"}},'
        ' "cost_estimate": {"estimated_cost_usd": 0.25, "estimated_llm_calls": 40},'
        ' "budget_warning": null}'
    )
    result = decode(body, OptimizeResult)
    assert result.job.id == uuid.UUID(ID)
    assert result.cost_estimate.estimated_cost_usd == 0.25
    assert result.cost_estimate.estimated_llm_calls == 40
    assert result.budget_warning is None


@pytest.mark.parametrize(
    ("status", "terminal", "success"),
    [
        ("PENDING", False, False),
        ("RUNNING", False, False),
        ("running", False, False),
        ("SUCCESS", True, True),
        ("completed", True, True),
        ("FAILURE", True, False),
        ("PR_FAILED", True, False),
        ("failed", True, False),
        ("something-new", False, False),
    ],
)
def test_job_is_terminal_for_any_spelling(status: str, terminal: bool, success: bool) -> None:
    job = decode(f'{{"id": "{ID}", "status": "{status}"}}', Job)
    assert job.status == status
    assert job.is_terminal is terminal
    assert job.is_success is success


def test_prompt_render_fills_placeholders_with_any_spacing() -> None:
    prompt = Prompt(prompt_text="Summarize {{ticket}} for {{  team }}; keep {braces} as is.")
    assert prompt.render(ticket="T-1", team="support", unused=1) == (
        "Summarize T-1 for support; keep {braces} as is."
    )
    assert prompt.variables == ["ticket", "team"]


def test_prompt_render_names_a_missing_variable() -> None:
    prompt = Prompt(prompt_text="Hello {{ name }}, about {{ topic }}")
    with pytest.raises(CTValidationError, match="'topic' is missing") as info:
        prompt.render(name="Ada")
    assert info.value.status_code is None


def test_prompt_is_frozen_because_the_cache_shares_it() -> None:
    prompt = Prompt(prompt_text="x")
    with pytest.raises(AttributeError):
        prompt.prompt_text = "y"  # type: ignore[misc]


def test_feedback_request_sends_every_field() -> None:
    body = msgspec.json.decode(encode(FeedbackRequest(task_id="t", score=0.5)))
    assert body == {
        "task_id": "t", "id": None, "inputs": None, "output": None, "score": 0.5,
        "source": "sdk", "metadata": None,
    }


def test_request_bodies_carry_the_documented_defaults() -> None:
    from kaizen_sdk.models import ScoreRequest, TaskCreateRequest

    feedback = msgspec.json.decode(encode(FeedbackRequest(task_id="t", output="x")))
    assert feedback["source"] == "sdk"
    task = msgspec.json.decode(encode(TaskCreateRequest(name="t")))
    assert task["feedback_threshold"] == 50
    score = msgspec.json.decode(encode(ScoreRequest(score=0.5)))
    assert score == {"score": 0.5, "scored_by": "sdk"}
