-- What every job shares: the version marker, who triggered a run, the bounded
-- lock wait, and the runner that writes the job's system_job_log row.

-- Its presence tells a client the database runs the ops layer.
CREATE OR REPLACE FUNCTION ops_layer_version()
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = public, pg_temp
AS $$ SELECT '1.0.0' $$;

-- Who started a job or a write: the custom setting carpool.operator (the
-- dashboard sets it on its job connection), else the connection's
-- application_name, else the login role (not current_user: inside a SECURITY
-- DEFINER function that is the owner).
CREATE OR REPLACE FUNCTION ops_operator()
RETURNS text
LANGUAGE sql STABLE
SET search_path = public, pg_temp
AS $$
    SELECT COALESCE(
        NULLIF(btrim(current_setting('carpool.operator', true)), ''),
        NULLIF(btrim(current_setting('application_name', true)), ''),
        session_user::text)
$$;

-- How long a job or write may wait for one row lock. Entry points declare
-- `SET lock_timeout = '5s'`, so the caller's setting (often 0 = forever) never
-- applies and the value is restored when they return; carpool.lock_timeout
-- overrides the 5 s for the rest of that call.
CREATE OR REPLACE FUNCTION ops_apply_lock_timeout()
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    wanted text := NULLIF(btrim(current_setting('carpool.lock_timeout', true)), '');
BEGIN
    IF wanted IS NOT NULL THEN
        PERFORM set_config('lock_timeout', wanted, true);
    END IF;
END
$$;

-- A ride counts as overdue for the expiry check and the health count only
-- this long after it expired: expire_rides runs every 5 minutes, so rides that
-- expired moments ago are normal and must not open a violation each time.
CREATE OR REPLACE FUNCTION ops_expiry_grace()
RETURNS interval
LANGUAGE sql IMMUTABLE
AS $$ SELECT interval '10 minutes' $$;

-- The advisory lock key that serialises runs of one job.
CREATE OR REPLACE FUNCTION ops_job_lock_key(p_job text)
RETURNS bigint
LANGUAGE sql IMMUTABLE
AS $$ SELECT hashtextextended('carpool_ops.job.' || p_job, 0) $$;

-- Runs one job's work function with its system_job_log row around it.
--
-- The work runs in a subtransaction (the inner BEGIN ... EXCEPTION block): if
-- it fails, everything it wrote is rolled back, the row becomes `failed` with
-- the message and SQLSTATE, and the caller gets {"success": false, ...}
-- instead of an exception, so the failed row commits with the caller's
-- transaction. OTHERS does not cover a cancelled statement (57014: a
-- statement_timeout or a cancel from the dashboard), so it is named too.
--
-- p_work returns the job's result object; its `records_processed` key goes to
-- the log row's column and is left out of the result.
CREATE OR REPLACE FUNCTION ops_run_job(p_job text, p_work text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    v_log      system_job_log.id%TYPE;
    v_started  timestamptz := clock_timestamp();
    v_result   jsonb;
    v_records  integer;
    v_state    text;
    v_message  text;
    v_detail   text;
    v_context  text;
BEGIN
    INSERT INTO system_job_log (job_name, started_at, status, records_processed,
                                errors_encountered, details, triggered_by)
    VALUES (p_job, v_started, 'running', 0, 0,
            jsonb_build_object('started_at', v_started), ops_operator())
    RETURNING id INTO v_log;

    BEGIN
        PERFORM ops_apply_lock_timeout();
        EXECUTE format('SELECT %I()', p_work) INTO v_result;
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE,
                                v_message = MESSAGE_TEXT,
                                v_detail = PG_EXCEPTION_DETAIL,
                                v_context = PG_EXCEPTION_CONTEXT;
    END;

    IF v_state IS NOT NULL THEN
        UPDATE system_job_log
           SET status = 'failed',
               completed_at = clock_timestamp(),
               records_processed = 0,
               errors_encountered = 1,
               error_message = v_message,
               sqlstate = v_state,
               details = COALESCE(details, '{}'::jsonb) || jsonb_strip_nulls(
                   jsonb_build_object('sqlstate', v_state,
                                      'error_detail', NULLIF(v_detail, ''),
                                      'error_context', NULLIF(v_context, '')))
         WHERE id = v_log;
        RETURN jsonb_build_object('success', false, 'error', v_message,
                                  'sqlstate', v_state, 'job_log_id', v_log);
    END IF;

    v_records := COALESCE((v_result ->> 'records_processed')::integer, 0);
    v_result := jsonb_build_object('success', true)
                || (v_result - 'records_processed')
                || jsonb_build_object('job_log_id', v_log);
    UPDATE system_job_log
       SET status = 'completed',
           completed_at = clock_timestamp(),
           records_processed = v_records,
           details = COALESCE(details, '{}'::jsonb) || (v_result - 'job_log_id')
     WHERE id = v_log;
    RETURN v_result;
END
$$;
