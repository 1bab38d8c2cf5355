-- PostgreSQL step 2, the twin of SQLite step 11 "ui sessions": the web UI's sign-in sessions,
-- in the database so that every server process on it knows them. A row is named by the
-- SHA-256 of the cookie's session id (the id itself is never stored); times are epoch seconds.

CREATE TABLE IF NOT EXISTS ui_sessions (
    id_hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    key_id TEXT,
    key_hash TEXT,
    csrf TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    seen DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS ui_sessions_seen ON ui_sessions (seen);
