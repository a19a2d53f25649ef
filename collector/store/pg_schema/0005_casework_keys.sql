-- Casework (issue 14): collector/store/console_schema.py 0005_casework_keys column for column.
-- The reason recorded with an action (closing a severity 4-5 item needs one), and indexes for
-- keyset pagination (each ends in id, the key's tie-breaker) of the queue in its default
-- order, by severity, by last seen and per pupil ("assigned to me" uses
-- console_queue_assignee from 0006).
ALTER TABLE queue_actions ADD COLUMN reason TEXT NOT NULL DEFAULT '';
DROP INDEX IF EXISTS console_queue_status_order;
CREATE INDEX console_queue_status_keys ON queue_items(
    site_id, status, pinned DESC, priority DESC, last_time_ms DESC, id DESC);
CREATE INDEX console_queue_order_keys ON queue_items(
    site_id, pinned DESC, priority DESC, last_time_ms DESC, id DESC);
CREATE INDEX console_queue_last_seen ON queue_items(site_id, last_time_ms DESC, id DESC);
CREATE INDEX console_queue_severity_keys ON queue_items(
    site_id, severity DESC, last_time_ms DESC, id DESC);
CREATE INDEX console_queue_pupil_keys ON queue_items(
    site_id, os_user, last_time_ms DESC, id DESC);
