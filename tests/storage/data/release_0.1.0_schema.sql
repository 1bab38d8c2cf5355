-- The schema of a database created by kaizen-server 0.1.0 (schema version 7), as its
-- sqlite_master holds it, in creation order: the code before the steps became files.
-- tests/storage/test_migrations.py builds "a file made by the current release" from it.
CREATE TABLE schema_version (
    version INTEGER NOT NULL,
    applied_at TEXT NOT NULL
);
CREATE TABLE tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    description TEXT,
    schema_json TEXT,
    feedback_threshold INTEGER NOT NULL,
    feedback_retention_limit INTEGER,
    evaluator_config TEXT,
    teacher_model TEXT,
    judge_model TEXT,
    module_type TEXT,
    cost_budget REAL,
    github_repo TEXT,
    github_base_branch TEXT,
    prompt_path TEXT,
    prompt_format TEXT,
    created_at TEXT NOT NULL,
    feedback_count INTEGER NOT NULL DEFAULT 0,
    feedback_since_optimization INTEGER NOT NULL DEFAULT 0,
    last_optimization TEXT
, scored_since_job INTEGER NOT NULL DEFAULT 0, daily_budget_usd REAL, max_jobs_per_day INTEGER, cooldown_minutes REAL);
CREATE TABLE prompts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    task_id TEXT NOT NULL REFERENCES tasks(id),
    version_number INTEGER NOT NULL,
    prompt_text TEXT NOT NULL,
    eval_score REAL,
    status TEXT NOT NULL,
    optimizer TEXT,
    dspy_version TEXT,
    created_at TEXT NOT NULL, verdict TEXT, baseline_version INTEGER, baseline_score REAL, eval_sample_size INTEGER,
    UNIQUE (task_id, version_number)
);
CREATE TABLE feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    task_id TEXT NOT NULL REFERENCES tasks(id),
    inputs TEXT,
    output TEXT,
    score REAL,
    source TEXT,
    metadata TEXT,
    created_at TEXT NOT NULL
, comment TEXT, correction TEXT, trace_id TEXT, prompt_version_id TEXT, arm TEXT);
CREATE INDEX feedback_task ON feedback (task_id, seq);
CREATE TABLE traces (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    task_id TEXT NOT NULL REFERENCES tasks(id),
    prompt_text TEXT,
    response_text TEXT,
    model TEXT,
    tokens INTEGER,
    latency_ms REAL,
    score REAL,
    scored_by TEXT,
    prompt_version_id TEXT,
    parent_trace_id TEXT,
    metadata TEXT,
    created_at TEXT NOT NULL
, arm TEXT, error INTEGER, user_id TEXT, session_id TEXT, tags TEXT);
CREATE INDEX traces_task ON traces (task_id, seq);
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    task_id TEXT NOT NULL REFERENCES tasks(id),
    prompt_version_id TEXT,
    status TEXT NOT NULL,
    triggered_by TEXT,
    feedback_count INTEGER,
    pr_url TEXT,
    error_message TEXT,
    job_metadata TEXT,
    progress_step TEXT,
    started_at TEXT,
    completed_at TEXT,
    created_at TEXT NOT NULL
, spent_usd REAL NOT NULL DEFAULT 0, llm_calls INTEGER NOT NULL DEFAULT 0, input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0, reserved_usd REAL NOT NULL DEFAULT 0, lease_owner TEXT, lease_until REAL);
CREATE INDEX jobs_task ON jobs (task_id, seq);
CREATE TABLE applied_scores (
    id TEXT PRIMARY KEY,
    trace_id TEXT NOT NULL,
    applied_at TEXT NOT NULL
);
CREATE INDEX feedback_trace ON feedback (trace_id);
CREATE TABLE rollouts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    task_id TEXT NOT NULL REFERENCES tasks(id),
    active_version_id TEXT NOT NULL,
    candidate_version_id TEXT NOT NULL,
    state TEXT NOT NULL,
    config TEXT NOT NULL,
    step INTEGER NOT NULL,
    step_start_n INTEGER NOT NULL,
    salt TEXT NOT NULL,
    recommendation TEXT,
    reason TEXT,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    trace_seq INTEGER NOT NULL,
    feedback_seq INTEGER NOT NULL,
    end_trace_seq INTEGER,
    end_feedback_seq INTEGER,
    scores_seen INTEGER NOT NULL DEFAULT 0,
    evaluated_at INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX rollouts_one_running ON rollouts (task_id)
    WHERE state = 'running';
CREATE TABLE rollout_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id TEXT NOT NULL REFERENCES rollouts(id),
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    share REAL,
    reason TEXT,
    stats TEXT
);
CREATE INDEX rollout_events_rollout ON rollout_events (rollout_id, seq);
CREATE INDEX traces_version ON traces (prompt_version_id, seq);
CREATE INDEX feedback_version ON feedback (prompt_version_id, seq);
CREATE TABLE held_scores (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, trace_id TEXT NOT NULL, score REAL NOT NULL, scored_by TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE INDEX held_scores_trace ON held_scores (trace_id);
CREATE TABLE api_keys (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    created_by TEXT,
    revoked_at TEXT
);
CREATE UNIQUE INDEX api_keys_live_name ON api_keys (name)
    WHERE revoked_at IS NULL;
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    key_id TEXT,
    action TEXT NOT NULL,
    task_id TEXT,
    target TEXT,
    detail TEXT
);
CREATE TABLE job_calls ( seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL REFERENCES jobs(id), model TEXT NOT NULL, purpose TEXT NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL, charged_usd REAL NOT NULL, retries INTEGER NOT NULL, usage_reported INTEGER NOT NULL, at REAL NOT NULL);
CREATE INDEX job_calls_job ON job_calls (job_id, seq);
CREATE INDEX jobs_task_created ON jobs (task_id, created_at);
