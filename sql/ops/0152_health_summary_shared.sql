-- get_system_health_summary, cheap on a large platform and shared by viewers.
--
-- The computation reads only the open part of the platform: the exact totals
-- come from ops_row_counts (0151), and one merge of two small indexes (open
-- rides in id order, open bookings in ride order) gives the open ride counts,
-- the pending and confirmed counts, the overdue rides and the seat mismatches
-- together. Its cost follows the number of open rides, not the history.
--
-- Sharing: on a platform with at least 10 000 open rides (where computing it
-- costs tens of milliseconds) the summary is kept in ops_health_cache for
-- carpool.health_cache_ttl (default 2 s). Within that
-- time every viewer gets the kept summary (`cached: true`, `timestamp` is
-- when it was computed). When it is stale, one caller recomputes it and
-- concurrent callers wait for that result (at most 250 ms) instead of
-- computing it again, so twenty dashboards polling together cost about one.
-- On a smaller platform it is never kept: computing it costs a few
-- milliseconds, less than staleness would cost. Read-only sessions use the kept summary but never
-- write it. A kept summary is at most the TTL old, so a job's effect shows
-- within two seconds. `SET carpool.health_cache = 'off'` bypasses it.

CREATE TABLE IF NOT EXISTS ops_health_cache (
    id           boolean PRIMARY KEY DEFAULT true CHECK (id),
    summary      jsonb NOT NULL,
    computed_at  timestamptz NOT NULL,
    compute_ms   double precision NOT NULL
);

-- How many open rides make the summary worth sharing.
CREATE OR REPLACE FUNCTION ops_health_cache_min_open()
RETURNS bigint
LANGUAGE sql IMMUTABLE
AS $$ SELECT 10000::bigint $$;

CREATE OR REPLACE FUNCTION ops_health_compute()
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = public, pg_temp
AS $$
DECLARE
    v_rides      bigint := ops_counted_rows('rides');
    v_bookings   bigint := ops_counted_rows('ride_bookings');
    v_open       record;
    v_jobs       jsonb;
    v_failed     integer;
BEGIN
    -- Without the counters (a half-applied upgrade) count, exactly.
    IF v_rides IS NULL THEN
        SELECT count(*) INTO v_rides FROM rides;
    END IF;
    IF v_bookings IS NULL THEN
        SELECT count(*) INTO v_bookings FROM ride_bookings;
    END IF;

    WITH b AS (
        SELECT ride_id,
               sum(seats_requested) AS seats,
               count(*) FILTER (WHERE status = 'pending') AS pending,
               count(*) FILTER (WHERE status = 'confirmed') AS confirmed
          FROM ride_bookings
         WHERE status IN ('pending', 'confirmed')
         GROUP BY ride_id
    ), r AS (
        SELECT id, available_seats, total_seats, status,
               COALESCE(available_until, departure_time) AS expires_at
          FROM rides
         WHERE status IN ('active', 'in-progress')
    )
    SELECT count(r.id) FILTER (WHERE r.status = 'active') AS active,
           count(r.id) FILTER (WHERE r.status = 'in-progress') AS in_progress,
           count(r.id) FILTER (WHERE r.expires_at < now() - ops_expiry_grace())
               AS expired,
           COALESCE(sum(b.pending), 0) AS pending,
           COALESCE(sum(b.confirmed), 0) AS confirmed,
           count(r.id) FILTER (WHERE r.available_seats
                                     <> r.total_seats - COALESCE(b.seats, 0))
               AS mismatches
      INTO v_open
      FROM b FULL JOIN r ON r.id = b.ride_id;

    -- The latest run of each job in the last 24 hours, failed ones included.
    SELECT COALESCE(jsonb_agg(jsonb_build_object(
               'job_name', j.job_name,
               'status', j.status,
               'started_at', j.started_at,
               'completed_at', j.completed_at,
               'records_processed', j.records_processed,
               'duration_ms', round(extract(epoch FROM j.completed_at - j.started_at)
                                    * 1000),
               'error_message', j.error_message)
             ORDER BY j.started_at DESC), '[]'::jsonb)
      INTO v_jobs
      FROM (SELECT DISTINCT ON (l.job_name) l.*
              FROM system_job_log l
             WHERE l.started_at > now() - interval '24 hours'
             ORDER BY l.job_name, l.started_at DESC) j;

    SELECT count(*) INTO v_failed
      FROM system_job_log
     WHERE started_at > now() - interval '24 hours' AND status = 'failed';

    RETURN jsonb_build_object(
        'timestamp', now(),
        'total_rides', v_rides,
        'active_rides', v_open.active,
        'in_progress_rides', v_open.in_progress,
        'total_bookings', v_bookings,
        'pending_bookings', v_open.pending,
        'confirmed_bookings', v_open.confirmed,
        'expired_active_rides', v_open.expired,
        'seat_mismatches', v_open.mismatches,
        'unresolved_violations', (SELECT count(*) FROM invariant_violations
                                   WHERE resolved_at IS NULL),
        'recent_job_status', v_jobs,
        'failed_jobs_24h', v_failed,
        'estimated_counts', '[]'::jsonb,
        'ops_layer_version', ops_layer_version());
END
$$;

CREATE OR REPLACE FUNCTION get_system_health_summary()
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_key       constant bigint := ops_job_lock_key('get_system_health_summary');
    v_ttl       interval := interval '2 seconds';
    v_use       boolean := COALESCE(current_setting('carpool.health_cache', true), '')
                           <> 'off';
    v_writable  boolean := current_setting('transaction_read_only') = 'off';
    v_kept      ops_health_cache%ROWTYPE;
    v_started   timestamptz;
    v_summary   jsonb;
BEGIN
    BEGIN
        v_ttl := COALESCE(NULLIF(btrim(current_setting('carpool.health_cache_ttl',
                                                       true)), '')::interval, v_ttl);
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow
                   OR invalid_text_representation THEN
        NULL;  -- an unreadable setting keeps the default
    END;

    IF v_use THEN
        SELECT * INTO v_kept FROM ops_health_cache;
        IF FOUND AND clock_timestamp() - v_kept.computed_at < v_ttl THEN
            RETURN v_kept.summary || jsonb_build_object('cached', true);
        END IF;
        -- Stale: if another caller is recomputing it, wait for its result.
        IF FOUND AND NOT pg_try_advisory_xact_lock(v_key) THEN
            PERFORM set_config('lock_timeout', '250ms', true);
            BEGIN
                PERFORM pg_advisory_xact_lock(v_key);
            EXCEPTION WHEN lock_not_available THEN
                NULL;
            END;
            SELECT * INTO v_kept FROM ops_health_cache;
            IF FOUND AND clock_timestamp() - v_kept.computed_at < v_ttl THEN
                RETURN v_kept.summary || jsonb_build_object('cached', true);
            END IF;
        END IF;
    END IF;

    v_started := clock_timestamp();
    v_summary := ops_health_compute();

    IF v_use AND v_writable
       AND (v_summary ->> 'active_rides')::bigint
           + (v_summary ->> 'in_progress_rides')::bigint >= ops_health_cache_min_open()
    THEN
        BEGIN
            PERFORM set_config('lock_timeout', '250ms', true);
            INSERT INTO ops_health_cache AS c (id, summary, computed_at, compute_ms)
            VALUES (true, v_summary, v_started,
                    1000 * extract(epoch FROM clock_timestamp() - v_started))
            ON CONFLICT (id) DO UPDATE
                SET summary = EXCLUDED.summary,
                    computed_at = EXCLUDED.computed_at,
                    compute_ms = EXCLUDED.compute_ms
                WHERE c.computed_at < EXCLUDED.computed_at;
        EXCEPTION WHEN lock_not_available THEN
            NULL;  -- someone else holds the row; they are keeping it fresh
        END;
    END IF;
    RETURN v_summary || jsonb_build_object('cached', false);
END
$$;
