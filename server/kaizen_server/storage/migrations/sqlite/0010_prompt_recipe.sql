-- Schema step 10, "prompt recipe": a version's chat messages and model settings (JSON), and
-- labels other than "production" (which is the active version): one row per task and label.

ALTER TABLE prompts ADD COLUMN messages TEXT;
ALTER TABLE prompts ADD COLUMN config TEXT;
CREATE TABLE IF NOT EXISTS prompt_labels (task_id TEXT NOT NULL REFERENCES tasks(id), label TEXT NOT NULL, version_id TEXT NOT NULL REFERENCES prompts(id), set_at TEXT NOT NULL, PRIMARY KEY (task_id, label));
CREATE INDEX IF NOT EXISTS prompt_labels_version ON prompt_labels (version_id);
