-- migrate: no-transaction (CREATE INDEX CONCURRENTLY cannot run in a transaction)
--
-- Indexes that make the dashboard's reads and the jobs follow the open part of
-- the platform instead of its history. Built CONCURRENTLY, one statement at a
-- time, so bookings keep flowing during the build on a large live database.
-- A failed concurrent build leaves an INVALID index that IF NOT EXISTS would
-- take for done; the first statement drops such leftovers of this file.
DO $$
DECLARE
    leftover record;
BEGIN
    PERFORM set_config('lock_timeout', '5s', true);
    FOR leftover IN
        SELECT c.relname
          FROM pg_index i
          JOIN pg_class c ON c.oid = i.indexrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public'
           AND NOT i.indisvalid
           AND c.relname IN (
               'system_job_log_ops_page_idx', 'system_job_log_ops_latest_idx',
               'rides_ops_open_seats_idx')
    LOOP
        EXECUTE format('DROP INDEX public.%I', leftover.relname);
    END LOOP;
END
$$;
-- statement

-- The dashboard's job log page (newest first, NULLS LAST, then id) and the
-- latest run of each job: without an index in exactly that order every poll
-- sorts the whole log.
CREATE INDEX CONCURRENTLY IF NOT EXISTS system_job_log_ops_page_idx
    ON system_job_log (started_at DESC NULLS LAST, id DESC);
-- statement

CREATE INDEX CONCURRENTLY IF NOT EXISTS system_job_log_ops_latest_idx
    ON system_job_log (job_name, started_at DESC NULLS LAST);
-- statement

-- Open rides in id order with everything the health summary and the seat
-- checks read: they merge it with the open bookings (also in ride order) in
-- one pass over these two small indexes, never touching the tables.
CREATE INDEX CONCURRENTLY IF NOT EXISTS rides_ops_open_seats_idx
    ON rides (id)
    INCLUDE (available_seats, total_seats, status, available_until, departure_time)
    WHERE status IN ('active', 'in-progress');
