-- Schema step 4, "trace context": who a call was for (ct.context): user, session, tags
-- (a JSON list). FROZEN.

ALTER TABLE traces ADD COLUMN user_id TEXT;
ALTER TABLE traces ADD COLUMN session_id TEXT;
ALTER TABLE traces ADD COLUMN tags TEXT;
