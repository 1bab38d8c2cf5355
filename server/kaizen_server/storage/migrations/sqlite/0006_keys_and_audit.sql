-- Schema step 6, "keys and audit": scoped keys (hashes only) and the audit log. FROZEN.

CREATE TABLE IF NOT EXISTS api_keys (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    created_by TEXT,
    revoked_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_live_name ON api_keys (name)
    WHERE revoked_at IS NULL;
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    key_id TEXT,
    action TEXT NOT NULL,
    task_id TEXT,
    target TEXT,
    detail TEXT
);
