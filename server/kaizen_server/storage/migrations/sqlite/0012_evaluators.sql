-- Schema step 12, "evaluators": online evaluators of a task (their settings as a JSON object),
-- one row per evaluator and trace it took (the primary key makes "judged at most once" a
-- database guarantee: a worker claims a trace by inserting its row), and each evaluator's
-- books per UTC day (judge calls and dollars, kept exact at the cap by conditional updates).
-- A task counts the judged scores since its last job (a task driven by judged scores starts
-- a threshold job once feedback_threshold of them arrived).

CREATE TABLE IF NOT EXISTS evaluators (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, task_id TEXT NOT NULL REFERENCES tasks(id), name TEXT NOT NULL, kind TEXT NOT NULL, config TEXT NOT NULL, enabled INTEGER NOT NULL DEFAULT 1, scan_seq INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, UNIQUE (task_id, name));
CREATE TABLE IF NOT EXISTS evaluation_results (evaluator_id TEXT NOT NULL REFERENCES evaluators(id), trace_id TEXT NOT NULL, status TEXT NOT NULL, owner TEXT, lease_until REAL, reserved_usd REAL NOT NULL DEFAULT 0, charged_usd REAL NOT NULL DEFAULT 0, score REAL, reason TEXT, feedback_id TEXT, claimed_at TEXT NOT NULL, judged_at TEXT, PRIMARY KEY (evaluator_id, trace_id));
CREATE INDEX IF NOT EXISTS evaluation_results_status ON evaluation_results (evaluator_id, status);
CREATE INDEX IF NOT EXISTS evaluation_results_trace ON evaluation_results (trace_id);
CREATE TABLE IF NOT EXISTS evaluator_days (evaluator_id TEXT NOT NULL REFERENCES evaluators(id), day TEXT NOT NULL, calls INTEGER NOT NULL DEFAULT 0, spent_usd REAL NOT NULL DEFAULT 0, judged INTEGER NOT NULL DEFAULT 0, unjudged INTEGER NOT NULL DEFAULT 0, skipped_budget INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (evaluator_id, day));
ALTER TABLE tasks ADD COLUMN judged_since_job INTEGER NOT NULL DEFAULT 0;
