"""The settings of a task that can be changed: which column holds each, and what values it takes.

`SETTINGS` maps every field of `kaizen_sdk.models.TaskUpdateRequest` (the body of
``PATCH /api/v1/tasks/{task_id}``) to a `Setting`: the ``tasks`` column that stores it (or a key
inside the ``evaluator_config`` JSON object, for the ``rubric`` and ``task_model``
shorthands) and the check its values must pass. `column_values` turns an update into the new
column values, checking every given field first, so a bad value changes nothing; `check_create`
applies the same checks to the settings of a new task. Adding a setting takes a field on
`TaskUpdateRequest`, a column (a numbered step in `kaizen_server/storage/migrations/`) and one
entry here; the clients and ``kaizen tasks update`` follow the fields of `TaskUpdateRequest` by
themselves.

A value of ``None`` clears a setting (when it may be cleared); a field left out is kept.
``evaluator_config`` is merged key by key into the stored object.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from kaizen_sdk.models import RolloutRequest, TaskCreateRequest, TaskUpdateRequest
from kaizen_server.optimize.dspy_optimizer import MODULE_TYPES, STRATEGIES

__all__ = [
    "EVALUATOR_KEYS",
    "PROMPT_FORMATS",
    "SETTINGS",
    "BadSetting",
    "Setting",
    "check_create",
    "column_values",
    "fill_task",
    "update_command",
]

PROMPT_FORMATS = ("text", "json")
"""Values of ``prompt_format``: the file holds the template itself, or ``{"prompt_text"}``."""

_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_BRANCH_BAD = re.compile(r"[\s~^:?*\[\\]|\.\.|//|@\{")


class BadSetting(ValueError):
    """A setting's value is not allowed; ``str()`` names the field and what it takes."""


Check = Callable[[Any], "str | None"]
"""Returns what is wrong with a (not ``None``) value, as the end of a sentence, or ``None``."""


def _text(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    return None


def _name(value: Any) -> str | None:
    """A model name and the like: a non-empty string without surrounding blanks."""
    if not isinstance(value, str) or not value.strip():
        return f"must be a non-empty string, got {value!r}"
    if value != value.strip():
        return f"must not start or end with blanks, got {value!r}"
    return None


def _int_at_least(low: int) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            return f"must be an integer >= {low}, got {value!r}"
        return None

    return check


def _budget(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number of US dollars, got {value!r}"
    if not math.isfinite(value) or value < 0:
        return f"must be a finite number >= 0 (0 allows no spend), got {value!r}"
    return None


def _minutes(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0 <= value <= 525_600:
        return f"must be a number of minutes from 0 to 525600, got {value!r}"
    return None


def _sample_size(value: Any) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool) or not 2 <= value <= 500:
        return f"must be an integer from 2 to 500, got {value!r}"
    return None


def _one_of(choices: tuple[str, ...]) -> Check:
    def check(value: Any) -> str | None:
        if value not in choices:
            return f"must be one of {', '.join(choices)}, got {value!r}"
        return None

    return check


def _object(value: Any) -> str | None:
    if not isinstance(value, dict):
        return f"must be a JSON object, got {type(value).__name__}"
    return None


def _repo(value: Any) -> str | None:
    if not isinstance(value, str) or not _REPO.fullmatch(value):
        return f"must be a GitHub repository as OWNER/NAME, got {value!r}"
    return None


def _branch(value: Any) -> str | None:
    problem = _name(value)
    if problem is None and (_BRANCH_BAD.search(value) or value.startswith(("-", "/"))):
        problem = f"is not a valid branch name, got {value!r}"
    return problem


def _path(value: Any) -> str | None:
    problem = _name(value)
    if problem is None and (
        value.startswith("/") or "\\" in value or ".." in value.split("/") or value.endswith("/")
    ):
        problem = f"must be a file path relative to the repository root, got {value!r}"
    return problem


def _auto_rollout(value: Any) -> str | None:
    """``true``/``false``, or an object of `RolloutRequest` fields (without the candidate)."""
    if isinstance(value, bool):
        return None
    if not isinstance(value, dict):
        return f"must be true, false or an object of rollout settings, got {value!r}"
    if "candidate_version_id" in value:
        return "must not name candidate_version_id (the job's candidate is rolled out)"
    try:
        msgspec.convert({**value, "candidate_version_id": str(uuid.UUID(int=0))}, RolloutRequest)
    except msgspec.ValidationError as exc:
        return f"is not a valid rollout: {exc}"
    return None


EVALUATOR_KEYS: Mapping[str, Check] = {
    "rubric": _name,
    "task_model": _name,
    "optimizer": _one_of(STRATEGIES),
    "min_examples": _int_at_least(2),
    "max_demos": _int_at_least(1),
    "max_metric_calls": _int_at_least(1),
    "auto_rollout": _auto_rollout,
    "eval_sample_size": _sample_size,
    "judged_scores": lambda v: None if isinstance(v, bool) else "must be true or false",
}
"""The ``evaluator_config`` keys checked when a task is created or updated (others are kept
as given: the optimizers and rollouts read further keys)."""


def _evaluator_config(value: Any) -> str | None:
    problem = _object(value)
    if problem is not None:
        return problem
    for key, check in EVALUATOR_KEYS.items():
        if key in value and value[key] is not None:
            inner = check(value[key])
            if inner is not None:
                return f"key {key!r} {inner}"
    return None


@dataclasses.dataclass(frozen=True)
class Setting:
    """Where one task setting is stored and which values it takes.

    Parameters:
        column: the ``tasks`` column.
        check: what is wrong with a value that is not ``None`` (see `Check`).
        key: a key inside the column's JSON object, for a setting kept in one.
        nullable: whether ``None`` clears it.
        json: whether the column holds the value as JSON text.
        merge: whether a given object is merged into the stored one, key by key (a key given
            as ``None`` is removed), instead of replacing it.
    """

    column: str
    check: Check
    key: str | None = None
    nullable: bool = True
    json: bool = False
    merge: bool = False


SETTINGS: Mapping[str, Setting] = {
    "description": Setting("description", _text),
    "schema_json": Setting("schema_json", _object, json=True),
    "feedback_threshold": Setting("feedback_threshold", _int_at_least(1), nullable=False),
    "feedback_retention_limit": Setting("feedback_retention_limit", _int_at_least(1)),
    "feedback_retention_days": Setting("feedback_retention_days", _int_at_least(1)),
    "trace_retention_limit": Setting("trace_retention_limit", _int_at_least(1)),
    "trace_retention_days": Setting("trace_retention_days", _int_at_least(1)),
    "evaluator_config": Setting("evaluator_config", _evaluator_config, json=True, merge=True),
    "rubric": Setting("evaluator_config", _name, key="rubric", json=True),
    "task_model": Setting("evaluator_config", _name, key="task_model", json=True),
    "teacher_model": Setting("teacher_model", _name),
    "judge_model": Setting("judge_model", _name),
    "module_type": Setting("module_type", _one_of(MODULE_TYPES)),
    "cost_budget": Setting("cost_budget", _budget),
    "github_repo": Setting("github_repo", _repo),
    "github_base_branch": Setting("github_base_branch", _branch),
    "prompt_path": Setting("prompt_path", _path),
    "prompt_format": Setting("prompt_format", _one_of(PROMPT_FORMATS)),
    "daily_budget_usd": Setting("daily_budget_usd", _budget),
    "max_jobs_per_day": Setting("max_jobs_per_day", _int_at_least(0)),
    "cooldown_minutes": Setting("cooldown_minutes", _minutes),
}
"""Every field of `TaskUpdateRequest`, by name (a test checks that none is missing)."""


def _check(name: str, value: Any) -> None:
    setting = SETTINGS[name]
    if value is None:
        if not setting.nullable:
            raise BadSetting(f"`{name}` cannot be cleared (null): give a value")
        return
    problem = setting.check(value)
    if problem is not None:
        raise BadSetting(f"`{name}` {problem}")


def _merged(base: Any, patch: dict[str, Any]) -> dict[str, Any] | None:
    obj = dict(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            obj.pop(key, None)
        else:
            obj[key] = value
    return obj or None


def column_values(req: TaskUpdateRequest, current: Mapping[str, Any]) -> dict[str, Any]:
    """Return the new values of the columns *req* changes, as Python values (JSON decoded).

    *current* maps column names to the task's present values (JSON columns decoded). Every
    given field is checked before anything is computed; raises `BadSetting` naming the first
    bad field. ``evaluator_config`` is merged into the stored object key by key (a key given
    as ``None`` is removed; the field given as ``None`` clears the whole object); ``rubric``
    and ``task_model`` then set (or, with ``None``, remove) one key of it.
    """
    given = {
        name: value
        for name, value in msgspec.structs.asdict(req).items()
        if value is not msgspec.UNSET
    }
    for name, value in given.items():
        _check(name, value)
    values: dict[str, Any] = {}
    for name, value in given.items():  # whole columns first, then keys inside them
        setting = SETTINGS[name]
        if setting.key is None:
            if setting.merge and value is not None:
                value = _merged(current.get(setting.column), value)
            values[setting.column] = value
    for name, value in given.items():
        setting = SETTINGS[name]
        if setting.key is not None:
            base = values.get(setting.column, current.get(setting.column))
            values[setting.column] = _merged(base, {setting.key: value})
    return values


def check_create(req: TaskCreateRequest) -> None:
    """Apply the checks of `SETTINGS` to the settings of a new task; raise `BadSetting`."""
    for name in msgspec.structs.asdict(req):
        if name in SETTINGS:
            value = getattr(req, name)
            if value is not None or not SETTINGS[name].nullable:
                _check(name, value)


_METAVARS = {"teacher_model": "MODEL", "judge_model": "MODEL", "task_model": "MODEL",
             "cost_budget": "USD", "evaluator_config": "JSON", "schema_json": "JSON",
             "daily_budget_usd": "USD", "max_jobs_per_day": "N", "cooldown_minutes": "MINUTES"}


def update_command(task: str, name: str, value: str | None = None) -> str:
    """The ``kaizen tasks update`` command that sets *name* on *task*, for error messages.

    >>> update_command("shout", "teacher_model")
    '`kaizen tasks update shout --teacher-model MODEL`'
    """
    shown = value or _METAVARS.get(name, "VALUE")
    return f"`kaizen tasks update {shlex.quote(task)} --{name.replace('_', '-')} {shown}`"


_PLACEHOLDER = "`kaizen tasks update TASK "


def fill_task(message: str, task: str) -> str:
    """Put *task* into the ``kaizen tasks update TASK`` commands of an error *message*.

    Modules that do not know the task (the LLM client, the optimizer, the judge) name the
    command with ``TASK``; the job worker fills the name in before storing the message.
    """
    return message.replace(_PLACEHOLDER, f"`kaizen tasks update {shlex.quote(task)} ")
