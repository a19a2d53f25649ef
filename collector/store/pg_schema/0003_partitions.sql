-- Monthly partitions (UTC months) for captures and audit. vigil_ensure_partitions(now_ms, n)
-- creates the partitions of the month holding now_ms and the n - 1 months after it, and
-- returns how many it created; PostgresStore runs it at every start and from
-- maintain_partitions(), which the retention loop calls. Rows already sitting in the DEFAULT
-- partition for a month being created are moved into the new partition (PostgreSQL would
-- otherwise refuse to create it).
CREATE FUNCTION vigil_month_ms(ts timestamp) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT (extract(epoch FROM ts) * 1000)::bigint
$$;

CREATE FUNCTION vigil_ensure_partition(parent text, col text, month_start timestamp)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    name text := parent || '_p' || to_char(month_start, 'YYYYMM');
    lo bigint := vigil_month_ms(month_start);
    hi bigint := vigil_month_ms(month_start + interval '1 month');
    strays boolean;
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I >= $1 AND %I < $2)',
                   parent || '_default', col, col) INTO strays USING lo, hi;
    IF NOT strays THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%s) TO (%s)',
                       name, parent, lo, hi);
    ELSE
        -- Move the month's rows out of the default partition, then attach the filled table.
        PERFORM set_config('vigil.partition_move', 'on', true);
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                       name, parent);
        EXECUTE format('WITH moved AS (DELETE FROM %I WHERE %I >= $1 AND %I < $2 RETURNING *) '
                       'INSERT INTO %I SELECT * FROM moved',
                       parent || '_default', col, col, name) USING lo, hi;
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                       parent, name, lo, hi);
        PERFORM set_config('vigil.partition_move', '', true);
    END IF;
    IF parent = 'audit' THEN  -- row triggers are inherited; TRUNCATE triggers are not
        EXECUTE format('CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION vigil_audit_no_truncate()', name);
    END IF;
    RETURN true;
END $$;

CREATE FUNCTION vigil_ensure_partitions(now_ms bigint, months integer DEFAULT 3)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    first timestamp := date_trunc('month', to_timestamp(now_ms / 1000.0) AT TIME ZONE 'UTC');
    made integer := 0;
    i integer;
BEGIN
    -- Two collectors starting together serialise here instead of racing on CREATE TABLE.
    PERFORM pg_advisory_xact_lock(1986356841, 2);
    FOR i IN 0 .. GREATEST(months, 1) - 1 LOOP
        IF vigil_ensure_partition('captures', 'received_at', first + make_interval(months => i))
        THEN made := made + 1; END IF;
        IF vigil_ensure_partition('audit', 'at', first + make_interval(months => i))
        THEN made := made + 1; END IF;
    END LOOP;
    RETURN made;
END $$;
