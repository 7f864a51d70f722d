-- Grants for the functions and tables of 0150-0158, the same way 0110 does
-- them: every ops_ function revoked from PUBLIC and the platform's API roles
-- (whose default privileges would otherwise let any app user call it), then
-- granted where a role needs it.
DO $$
DECLARE
    fn         regprocedure;
    api_roles  text := 'PUBLIC';
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        api_roles := api_roles || ', anon';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        api_roles := api_roles || ', authenticated';
    END IF;
    FOR fn IN
        SELECT p.oid::regprocedure
          FROM pg_proc p
          JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public'
           AND (p.proname LIKE 'ops\_%'
                OR p.proname IN ('expire_rides', 'reconcile_seat_counts',
                                 'repair_missing_notifications',
                                 'check_system_invariants',
                                 'get_system_health_summary'))
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', fn, api_roles);
    END LOOP;
    EXECUTE format('REVOKE ALL ON ops_row_counts, ops_row_count_deltas,'
                   ' ops_health_cache FROM %s', api_roles);
END
$$;

GRANT SELECT ON ops_row_counts, ops_health_cache
   TO carpool_ops_viewer, carpool_ops_operator;

GRANT EXECUTE ON FUNCTION get_system_health_summary()
   TO carpool_ops_viewer, carpool_ops_operator;
