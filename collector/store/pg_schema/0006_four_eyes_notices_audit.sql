-- collector/store/console_schema.py 0003_four_eyes_notices_audit, column for column, with the
-- tenant columns: declined four-eyes requests, second approvers, the notification list's
-- "last opened" time, one scheduled weekly summary per site and week, audit-viewer indexes.
ALTER TABLE console_unlocks ADD COLUMN declined_by TEXT;
ALTER TABLE console_unlocks ADD COLUMN declined_at BIGINT;
ALTER TABLE console_unlocks ADD COLUMN decline_reason TEXT NOT NULL DEFAULT '';
CREATE INDEX console_unlocks_site ON console_unlocks(site_id, requested_at);
CREATE INDEX console_unlocks_requester ON console_unlocks(requested_by, requested_at);
ALTER TABLE users ADD COLUMN second_approver INTEGER NOT NULL DEFAULT 0;
CREATE TABLE console_notice_seen (
    username TEXT PRIMARY KEY,
    seen_at BIGINT NOT NULL,
    trust_id TEXT NOT NULL DEFAULT vigil_trust(),
    site_id TEXT
);
CREATE TABLE weekly_sends (
    site_id TEXT NOT NULL,
    week TEXT NOT NULL,
    claimed_at BIGINT NOT NULL,
    claimed_by TEXT NOT NULL DEFAULT '',
    sent_at BIGINT,
    recipients INTEGER NOT NULL DEFAULT 0,
    trust_id TEXT NOT NULL DEFAULT vigil_trust(),
    PRIMARY KEY (site_id, week)
);
CREATE INDEX console_queue_assignee ON queue_items(assignee, status);
CREATE INDEX audit_actor ON audit(actor, id);
CREATE INDEX audit_site ON audit(site_id, id);
CREATE INDEX audit_action ON audit(action, id);

-- Row-level security as in 0004_tenancy: the notice time belongs to the trust (like
-- sessions), a weekly send to its site.
ALTER TABLE console_notice_seen ENABLE ROW LEVEL SECURITY;
CREATE POLICY trust_scope ON console_notice_seen TO vigil_scoped
    USING (trust_id = vigil_trust()) WITH CHECK (trust_id = vigil_trust());
ALTER TABLE weekly_sends ENABLE ROW LEVEL SECURITY;
CREATE POLICY site_scope ON weekly_sends TO vigil_scoped
    USING (trust_id = vigil_trust() AND vigil_site_visible(site_id))
    WITH CHECK (trust_id = vigil_trust() AND vigil_site_visible(site_id));
GRANT SELECT, INSERT, UPDATE, DELETE ON console_notice_seen, weekly_sends TO vigil_scoped;
