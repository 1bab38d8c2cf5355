-- Schema step 2, "feedback critique": a comment and a correction on feedback, the trace a
-- feedback entry scores, and how many entries were scored since the task's last job (so a
-- threshold job needs new scored feedback). FROZEN.

ALTER TABLE feedback ADD COLUMN comment TEXT;
ALTER TABLE feedback ADD COLUMN correction TEXT;
ALTER TABLE feedback ADD COLUMN trace_id TEXT;
ALTER TABLE tasks ADD COLUMN scored_since_job INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS feedback_trace ON feedback (trace_id);
