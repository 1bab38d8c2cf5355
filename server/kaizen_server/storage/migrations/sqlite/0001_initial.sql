-- Schema step 1, "initial": tasks, prompt versions, feedback, traces, jobs, applied scores.
--
-- FROZEN. This is version 1 as the last release shipped it. Step 1 was extended after its
-- first release (prompts, traces, jobs and applied_scores came later), so every statement
-- here says IF NOT EXISTS and the SQLite runner applies this file at every start: a file
-- made by an early release gains the tables it lacks. No other step is ever re-run.

CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL,
    applied_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
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
);
CREATE TABLE IF NOT EXISTS prompts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    task_id TEXT NOT NULL REFERENCES tasks(id),
    version_number INTEGER NOT NULL,
    prompt_text TEXT NOT NULL,
    eval_score REAL,
    status TEXT NOT NULL,
    optimizer TEXT,
    dspy_version TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (task_id, version_number)
);
CREATE TABLE IF NOT EXISTS feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    task_id TEXT NOT NULL REFERENCES tasks(id),
    inputs TEXT,
    output TEXT,
    score REAL,
    source TEXT,
    metadata TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_task ON feedback (task_id, seq);
CREATE TABLE IF NOT EXISTS traces (
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
);
CREATE INDEX IF NOT EXISTS traces_task ON traces (task_id, seq);
CREATE TABLE IF NOT EXISTS jobs (
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
);
CREATE INDEX IF NOT EXISTS jobs_task ON jobs (task_id, seq);
CREATE TABLE IF NOT EXISTS applied_scores (
    id TEXT PRIMARY KEY,
    trace_id TEXT NOT NULL,
    applied_at TEXT NOT NULL
);
