-- collector/store/console_schema.py 0007_device_sources: each device's per-source health
-- (window, keys, media) from its latest heartbeat, as a JSON list in text.
ALTER TABLE devices ADD COLUMN sources TEXT NOT NULL DEFAULT '[]';
