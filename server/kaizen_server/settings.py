"""The environment variables the server reads, each named once here with its meaning.

The SDK names its own in `kaizen_sdk._config`; ``KAIZEN_API_KEY`` and ``KAIZEN_BASE_URL`` are
read by both (the key a server requires and a client sends; where the demo finds a server).
"""

from __future__ import annotations

__all__ = [
    "KAIZEN_API_KEY",
    "KAIZEN_BASE_URL",
    "KAIZEN_COOLDOWN_MINUTES",
    "KAIZEN_DAILY_BUDGET_USD",
    "KAIZEN_DATABASE_URL",
    "KAIZEN_FEEDBACK_RETENTION_DAYS",
    "KAIZEN_FEEDBACK_RETENTION_LIMIT",
    "KAIZEN_JOB_BUDGET_USD",
    "KAIZEN_JOB_LEASE_SECONDS",
    "KAIZEN_JOB_POLL_SECONDS",
    "KAIZEN_MAX_JOBS_PER_DAY",
    "KAIZEN_GITHUB_API_URL",
    "KAIZEN_GITHUB_TOKEN",
    "KAIZEN_JOB_TIMEOUT",
    "KAIZEN_LLM_API_KEY",
    "KAIZEN_LLM_BASE_URL",
    "KAIZEN_LLM_PRICES",
    "KAIZEN_OPTIMIZER",
    "KAIZEN_OTLP_TASK_MAP",
    "KAIZEN_PRICES_FILE",
    "KAIZEN_TRACE_RETENTION_DAYS",
    "KAIZEN_TRACE_RETENTION_LIMIT",
]

KAIZEN_API_KEY = "KAIZEN_API_KEY"
"""The server's own (admin) key, when ``--api-key`` is not given. Default: a fixed development
key, refused on an address other than loopback."""

KAIZEN_BASE_URL = "KAIZEN_BASE_URL"
"""A CT server ``kaizen demo`` runs against instead of an embedded one."""

KAIZEN_OPTIMIZER = "KAIZEN_OPTIMIZER"
"""The local server's optimizer: ``local`` (deterministic, no LLM) or ``dspy``. Default
``local``."""

KAIZEN_LLM_BASE_URL = "KAIZEN_LLM_BASE_URL"
"""Base URL of the OpenAI-compatible endpoint the ``dspy`` optimizer calls (``.../v1``)."""

KAIZEN_LLM_API_KEY = "KAIZEN_LLM_API_KEY"
"""Bearer key for `KAIZEN_LLM_BASE_URL`. Default: none (local servers usually need none)."""

KAIZEN_LLM_PRICES = "KAIZEN_LLM_PRICES"
"""JSON object ``{"model": [usd_per_1m_input, usd_per_1m_output]}`` overriding LLM prices."""

KAIZEN_GITHUB_TOKEN = "KAIZEN_GITHUB_TOKEN"
"""Token the local server uses to open prompt pull requests. Default: none (no pull requests)."""

KAIZEN_GITHUB_API_URL = "KAIZEN_GITHUB_API_URL"
"""GitHub REST API base URL (GitHub Enterprise: ``https://HOST/api/v3``). Default GitHub's."""

KAIZEN_JOB_TIMEOUT = "KAIZEN_JOB_TIMEOUT"
"""Seconds one optimization job may run (wall clock) before it ends FAILURE. Default 1800."""

KAIZEN_OTLP_TASK_MAP = "KAIZEN_OTLP_TASK_MAP"
"""The task of OTLP LLM spans without ``ct.task.name`` (``kaizen serve --otlp-task-map``):
``KIND:NAME=TASK`` pairs, comma-separated (KIND: span, agent, service), or ``@FILE.json``."""

KAIZEN_PRICES_FILE = "KAIZEN_PRICES_FILE"
"""JSON file of custom LLM prices (``kaizen serve --prices``). Default: none."""

KAIZEN_JOB_BUDGET_USD = "KAIZEN_JOB_BUDGET_USD"
"""LLM spend one optimization job may make when its task sets no ``cost_budget``; ``0``
allows none. Default ``1.00``."""

KAIZEN_DAILY_BUDGET_USD = "KAIZEN_DAILY_BUDGET_USD"
"""LLM spend per task per UTC day when the task sets none; ``0`` allows none. Default
``5.00``."""

KAIZEN_MAX_JOBS_PER_DAY = "KAIZEN_MAX_JOBS_PER_DAY"
"""Threshold jobs per task per UTC day when the task sets none. Default ``6``."""

KAIZEN_COOLDOWN_MINUTES = "KAIZEN_COOLDOWN_MINUTES"
"""Minutes between two threshold jobs of one task when the task sets none. Default ``60``."""

KAIZEN_DATABASE_URL = "KAIZEN_DATABASE_URL"
"""The server's database when ``--db`` is not given: a SQLite file path, or a
``postgresql://user:password@host:port/name`` URL (needs ``kaizen-server[postgres]``).
Default: the SQLite file ``kaizen.db`` (``kaizen serve``); the password is never printed."""

KAIZEN_JOB_LEASE_SECONDS = "KAIZEN_JOB_LEASE_SECONDS"
"""Seconds a job's lease lasts without renewal; the worker running the job renews it every
third of that. When a server process dies (or its machine goes), another process takes its
job over once the lease runs out (at once for a process of the same machine). Default ``60``."""

KAIZEN_JOB_POLL_SECONDS = "KAIZEN_JOB_POLL_SECONDS"
"""Seconds between two looks of an idle job worker into the database for a job nobody runs:
queued through another server process, or left by one that died. Default ``5``."""

KAIZEN_TRACE_RETENTION_LIMIT = "KAIZEN_TRACE_RETENTION_LIMIT"
"""Most traces kept per task when the task sets no ``trace_retention_limit``. Default: all."""

KAIZEN_TRACE_RETENTION_DAYS = "KAIZEN_TRACE_RETENTION_DAYS"
"""Days a trace is kept when its task sets no ``trace_retention_days``. Default: forever."""

KAIZEN_FEEDBACK_RETENTION_LIMIT = "KAIZEN_FEEDBACK_RETENTION_LIMIT"
"""Most feedback entries kept per task when the task sets no ``feedback_retention_limit``.
Default: all."""

KAIZEN_FEEDBACK_RETENTION_DAYS = "KAIZEN_FEEDBACK_RETENTION_DAYS"
"""Days a feedback entry is kept when its task sets no ``feedback_retention_days``. Default:
forever."""
