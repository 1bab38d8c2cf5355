-- Schema step 5, "held scores": in-process scores whose trace had not arrived yet (it was
-- spooled by a client while the server was down), applied when the trace is stored. FROZEN.

CREATE TABLE IF NOT EXISTS held_scores (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, trace_id TEXT NOT NULL, score REAL NOT NULL, scored_by TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS held_scores_trace ON held_scores (trace_id);
