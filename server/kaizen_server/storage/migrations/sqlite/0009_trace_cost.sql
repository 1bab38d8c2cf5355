-- Schema step 9, "trace cost": what a call cost in US dollars, priced at ingest from the
-- server's price table (NULL: no usage, or a model no table knows).

ALTER TABLE traces ADD COLUMN cost_usd REAL;
