-- Site scoping with row-level security.
--
-- The collector connects as the tables' owner, which RLS does not apply to (ENABLE, not
-- FORCE): ingest, fan-out, alerts and retention see the whole trust. A console request (or
-- any caller that must see only some sites) runs inside PostgresStore.scoped(sites), which
-- does SET LOCAL ROLE vigil_scoped and SET LOCAL vigil.sites = 'site-a,site-b' ('*' = every
-- site of the trust, for trust admins). Under that role a row is visible, and may be written,
-- only when its trust is the session's (vigil.trust) and its site is in vigil.sites. Rows of
-- the whole trust (site_id NULL: rule versions, users, sessions, audit rows without a site)
-- are visible only with '*', except users, rule versions, console sessions, log-in
-- attempts and known browsers, which every scoped session of the trust needs (log-in, rules).
DO $$
BEGIN
    CREATE ROLE vigil_scoped NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- roles are per cluster: another database of this cluster created it
END $$;
DO $$
BEGIN
    EXECUTE format('GRANT vigil_scoped TO %I', current_user);
EXCEPTION WHEN OTHERS THEN
    NULL;  -- a superuser needs no membership to SET ROLE
END $$;

CREATE FUNCTION vigil_site_visible(site text) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN current_setting('vigil.sites', true) = '*' THEN true
        WHEN site IS NULL THEN false
        ELSE site = ANY (string_to_array(COALESCE(current_setting('vigil.sites', true), ''), ','))
    END
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['sites', 'groups', 'enrol_tokens', 'devices', 'pupils', 'captures',
                             'capture_ids', 'queue_items', 'queue_actions', 'alerts',
                             'rules_acks', 'exemptions', 'audit', 'console_unlocks',
                             'audit_purge_allowed'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY site_scope ON %I TO vigil_scoped USING '
                       '(trust_id = vigil_trust() AND vigil_site_visible(site_id)) WITH CHECK '
                       '(trust_id = vigil_trust() AND vigil_site_visible(site_id))', t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['users', 'rule_versions', 'console_sessions',
                             'console_login_attempts', 'console_known_devices'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY trust_scope ON %I TO vigil_scoped USING '
                       '(trust_id = vigil_trust()) WITH CHECK (trust_id = vigil_trust())', t);
    END LOOP;
END $$;

-- The scoped role reaches the parents only (never a partition directly, which RLS on the
-- parent would not cover).
GRANT USAGE ON SCHEMA public TO vigil_scoped;
GRANT SELECT, INSERT, UPDATE, DELETE ON sites, groups, enrol_tokens, devices, pupils, captures,
    capture_ids, queue_items, queue_actions, alerts, rules_acks, exemptions, console_unlocks,
    console_login_attempts, audit_purge_allowed, users, rule_versions, console_sessions,
    console_known_devices TO vigil_scoped;
GRANT SELECT, INSERT ON audit TO vigil_scoped;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO vigil_scoped;
