-- A job stopped by another run of itself says so.
--
-- Two of the jobs (repair_missing_notifications, check_system_invariants)
-- take a per-job advisory lock, so a second run waits for the first and,
-- after the lock timeout, fails with PostgreSQL's bare "canceling statement
-- due to lock timeout". The job log then reads like a locked row somewhere.
-- ops_run_job looks for the backend holding that job's lock and names it
-- in the failed run's message: when it started, its pid and application.
-- Everything else is 0103's runner unchanged.

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
    v_holder   record;
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

    IF v_state = '55P03' THEN
        -- A lock timeout on the job's own lock: another session holds it,
        -- most likely a run of the job; say so rather than leave it a guess.
        SELECT a.pid, a.xact_start, a.application_name INTO v_holder
          FROM pg_locks l
          JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory'
           AND l.granted
           AND l.pid <> pg_backend_pid()
           AND l.database = (SELECT oid FROM pg_database
                              WHERE datname = current_database())
           AND l.classid = ((ops_job_lock_key(p_job) >> 32) & 4294967295)::oid
           AND l.objid = (ops_job_lock_key(p_job) & 4294967295)::oid
           AND l.objsubid = 1
         LIMIT 1;
        IF FOUND THEN
            v_message := v_message || ': the lock of ' || p_job
                         || ' is held by another session'
                         || COALESCE(' since ' || to_char(
                                v_holder.xact_start AT TIME ZONE 'UTC',
                                'YYYY-MM-DD HH24:MI:SS "UTC"'), '')
                         || ' (backend ' || v_holder.pid
                         || COALESCE(', ' || NULLIF(v_holder.application_name, ''),
                                     '')
                         || '), most likely another run of the job; wait for it'
                         || ' to finish instead of starting another';
        END IF;
    END IF;

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
