"""How long the server keeps traces and feedback: server-wide defaults and a task's own limits.

Four limits, each by task: the most traces kept (``trace_retention_limit``), the days a trace
is kept (``trace_retention_days``), and the same two for feedback entries
(``feedback_retention_limit``, ``feedback_retention_days``). Feedback entries are what the
optimizer learns from (scored feedback is its examples), so they have limits of their own and
can be kept longer than the raw traces. A task's field wins; where it is not set, the
server-wide default (`RetentionDefaults`, from ``KAIZEN_*_RETENTION_*``) applies; ``None``
everywhere keeps everything. The background `kaizen_server.jobs.retention.Pruner` applies
them; `kaizen_server.domain.decisions.retention_cutoff` decides which rows may go.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from kaizen_server.settings import (
    KAIZEN_FEEDBACK_RETENTION_DAYS,
    KAIZEN_FEEDBACK_RETENTION_LIMIT,
    KAIZEN_TRACE_RETENTION_DAYS,
    KAIZEN_TRACE_RETENTION_LIMIT,
)

__all__ = ["RETENTION_FIELDS", "RetentionDefaults", "RetentionLimits"]

RETENTION_FIELDS = ("trace_retention_limit", "trace_retention_days",
                    "feedback_retention_limit", "feedback_retention_days")
"""The task fields (and `RetentionDefaults` attributes) of the four limits."""

_VARIABLES = {
    "trace_retention_limit": KAIZEN_TRACE_RETENTION_LIMIT,
    "trace_retention_days": KAIZEN_TRACE_RETENTION_DAYS,
    "feedback_retention_limit": KAIZEN_FEEDBACK_RETENTION_LIMIT,
    "feedback_retention_days": KAIZEN_FEEDBACK_RETENTION_DAYS,
}


@dataclasses.dataclass(frozen=True)
class RetentionLimits:
    """Four limits (``None``: none); a task's effective ones come from `of`."""

    trace_retention_limit: int | None = None
    trace_retention_days: int | None = None
    feedback_retention_limit: int | None = None
    feedback_retention_days: int | None = None

    @classmethod
    def of(cls, task: Any, defaults: RetentionLimits) -> RetentionLimits:
        """The limits of *task* (a `Task` or a row with the same names): its own fields
        where set, else *defaults*'."""
        def pick(name: str) -> int | None:
            value = getattr(task, name) if hasattr(task, name) else task[name]
            return getattr(defaults, name) if value is None else int(value)

        return cls(**{name: pick(name) for name in RETENTION_FIELDS})

    @property
    def any(self) -> bool:
        """Whether any limit is set."""
        return any(getattr(self, name) is not None for name in RETENTION_FIELDS)


class RetentionDefaults(RetentionLimits):
    """The server-wide limits, for tasks that set none of their own."""

    @classmethod
    def resolve(cls, environ: Mapping[str, str] | None = None, **given: int | None
                ) -> RetentionDefaults:
        """Explicit arguments (*given*, by field name), then the ``KAIZEN_*`` variables.

        Raises `ValueError` naming the variable for a value that is not a whole number >= 1.
        """
        env = os.environ if environ is None else environ
        values: dict[str, int | None] = {}
        for name, variable in _VARIABLES.items():
            value = given.get(name)
            if value is None and env.get(variable, "").strip():
                text = env[variable].strip()
                try:
                    value = int(text)
                except ValueError:
                    raise ValueError(
                        f"{variable} must be a whole number of at least 1, got {text!r}"
                    ) from None
            if value is not None and value < 1:
                raise ValueError(f"{variable} must be a whole number of at least 1, got {value}")
            values[name] = value
        return cls(**values)
