-- migrate: no-transaction (the first count must not hold the trigger's lock)
--
-- Exact totals of rides and ride_bookings without counting them on every
-- health poll. The manual promises exact counts, and counting millions of
-- rows per poll per viewer is what the dashboard must not cost.
--
-- How: a base count per table, taken once with the snapshot it was taken in,
-- plus append-only delta rows that statement-level triggers write for every
-- INSERT and DELETE (one small row per statement, never an update of a shared
-- row, so concurrent bookings never wait on each other for a counter).
-- total = base + the deltas of transactions the base snapshot did not see.
-- expire_rides folds the deltas into the base now and then
-- (ops_compact_row_counts), so the sum stays short.
--
-- The triggers are ENABLE ALWAYS, so they also count rows loaded in replica
-- mode. Disabling user triggers on these tables bypasses them; run
-- ops_recount_rows() afterwards.

CREATE TABLE IF NOT EXISTS ops_row_counts (
    table_name  text PRIMARY KEY,
    base        bigint NOT NULL,
    snap        pg_snapshot NOT NULL,
    counted_at  timestamptz NOT NULL DEFAULT now()
);
-- statement

CREATE TABLE IF NOT EXISTS ops_row_count_deltas (
    table_name  text NOT NULL,
    delta       bigint NOT NULL,
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id()
);
-- statement

CREATE OR REPLACE FUNCTION ops_count_rows()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_n bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT count(*) INTO v_n FROM ops_new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT -count(*) INTO v_n FROM ops_old_rows;
    ELSE
        -- TRUNCATE: start again from an empty table.
        DELETE FROM ops_row_count_deltas WHERE table_name = TG_TABLE_NAME;
        UPDATE ops_row_counts
           SET base = 0, snap = pg_current_snapshot(), counted_at = now()
         WHERE table_name = TG_TABLE_NAME;
        RETURN NULL;
    END IF;
    IF v_n <> 0 THEN
        INSERT INTO ops_row_count_deltas (table_name, delta) VALUES (TG_TABLE_NAME, v_n);
    END IF;
    RETURN NULL;
END
$$;
-- statement

CREATE OR REPLACE TRIGGER ops_count_rides_insert
    AFTER INSERT ON rides REFERENCING NEW TABLE AS ops_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ops_count_rows();
-- statement

CREATE OR REPLACE TRIGGER ops_count_rides_delete
    AFTER DELETE ON rides REFERENCING OLD TABLE AS ops_old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ops_count_rows();
-- statement

CREATE OR REPLACE TRIGGER ops_count_rides_truncate
    AFTER TRUNCATE ON rides
    FOR EACH STATEMENT EXECUTE FUNCTION ops_count_rows();
-- statement

CREATE OR REPLACE TRIGGER ops_count_bookings_insert
    AFTER INSERT ON ride_bookings REFERENCING NEW TABLE AS ops_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ops_count_rows();
-- statement

CREATE OR REPLACE TRIGGER ops_count_bookings_delete
    AFTER DELETE ON ride_bookings REFERENCING OLD TABLE AS ops_old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ops_count_rows();
-- statement

CREATE OR REPLACE TRIGGER ops_count_bookings_truncate
    AFTER TRUNCATE ON ride_bookings
    FOR EACH STATEMENT EXECUTE FUNCTION ops_count_rows();
-- statement

DO $$
DECLARE
    t text;
BEGIN
    PERFORM set_config('lock_timeout', '5s', true);
    FOREACH t IN ARRAY ARRAY['ops_count_rides_insert', 'ops_count_rides_delete',
                             'ops_count_rides_truncate']
    LOOP
        EXECUTE format('ALTER TABLE rides ENABLE ALWAYS TRIGGER %I', t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['ops_count_bookings_insert', 'ops_count_bookings_delete',
                             'ops_count_bookings_truncate']
    LOOP
        EXECUTE format('ALTER TABLE ride_bookings ENABLE ALWAYS TRIGGER %I', t);
    END LOOP;
END
$$;
-- statement

-- The exact total of one counted table, as of the caller's snapshot.
CREATE OR REPLACE FUNCTION ops_counted_rows(p_table text)
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = public, pg_temp
AS $$
    SELECT c.base + COALESCE((SELECT sum(d.delta)
                                FROM ops_row_count_deltas d
                               WHERE d.table_name = c.table_name
                                 AND NOT pg_visible_in_snapshot(d.xid, c.snap)), 0)
      FROM ops_row_counts c
     WHERE c.table_name = p_table
$$;
-- statement

-- Folds the deltas into the base counts. Deltas and base change in one
-- transaction, so a reader sees either both before or both after. One caller
-- at a time; another caller skips instead of waiting, since folding later is
-- as good.
CREATE OR REPLACE FUNCTION ops_compact_row_counts()
RETURNS void
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock(ops_job_lock_key('ops_compact_row_counts')) THEN
        RETURN;
    END IF;
    WITH gone AS (
        DELETE FROM ops_row_count_deltas d
         USING ops_row_counts c
         WHERE c.table_name = d.table_name
        RETURNING d.table_name, d.delta, pg_visible_in_snapshot(d.xid, c.snap) AS seen
    ), folded AS (
        SELECT table_name, sum(delta) FILTER (WHERE NOT seen) AS n
          FROM gone GROUP BY table_name
    )
    UPDATE ops_row_counts c
       SET base = c.base + COALESCE(f.n, 0)
      FROM folded f
     WHERE c.table_name = f.table_name;
END
$$;
-- statement

-- Counts both tables again (after triggers were bypassed). One statement per
-- table, so the count and the snapshot it is recorded with are the same.
CREATE OR REPLACE FUNCTION ops_recount_rows()
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
BEGIN
    DELETE FROM ops_row_count_deltas;
    INSERT INTO ops_row_counts AS c (table_name, base, snap)
    SELECT 'rides', count(*), pg_current_snapshot() FROM rides
    ON CONFLICT (table_name) DO UPDATE
        SET base = EXCLUDED.base, snap = EXCLUDED.snap, counted_at = now();
    INSERT INTO ops_row_counts AS c (table_name, base, snap)
    SELECT 'ride_bookings', count(*), pg_current_snapshot() FROM ride_bookings
    ON CONFLICT (table_name) DO UPDATE
        SET base = EXCLUDED.base, snap = EXCLUDED.snap, counted_at = now();
END
$$;
-- statement

-- The first counts, taken after the triggers exist: rows of transactions this
-- snapshot saw are in the count, and their deltas are ignored.
INSERT INTO ops_row_counts (table_name, base, snap)
SELECT 'rides', count(*), pg_current_snapshot() FROM rides
ON CONFLICT (table_name) DO NOTHING;
-- statement

INSERT INTO ops_row_counts (table_name, base, snap)
SELECT 'ride_bookings', count(*), pg_current_snapshot() FROM ride_bookings
ON CONFLICT (table_name) DO NOTHING;
