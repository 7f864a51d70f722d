-- Who may call what. Applied last, after every function exists.
--
-- The platform's default privileges give anon and authenticated EXECUTE on
-- every new function in public, and PUBLIC has it by default, so each ops
-- function (and each deployed job name, whose grants the deployed SQL left
-- open) is revoked from all three explicitly. A later migration that adds a
-- function must revoke it the same way.
--
-- carpool_ops_viewer reads and previews; carpool_ops_operator also runs the
-- jobs and the writes. Both are NOLOGIN: grant one to a login role.

-- Roles are cluster-wide: another database on the server may create them at
-- the same moment, hence the guard on "already exists".
DO $$
DECLARE
    wanted text;
BEGIN
    FOREACH wanted IN ARRAY ARRAY['carpool_ops_viewer', 'carpool_ops_operator'] LOOP
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = wanted) THEN
                EXECUTE format('CREATE ROLE %I NOLOGIN', wanted);
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END LOOP;
END
$$;

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

    -- Every ops function, the five job names, and any deployed overload of
    -- them: nobody but the owner until granted below.
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

    EXECUTE format('REVOKE ALL ON ops_open_ride_seats FROM %s', api_roles);
END
$$;

GRANT USAGE ON SCHEMA public TO carpool_ops_viewer, carpool_ops_operator;

-- Reading: the platform and ops tables, for the dashboard's panels.
GRANT SELECT ON profiles, vehicles, rides, ride_bookings, notifications,
                system_job_log, invariant_violations, admin_audit_log,
                ops_open_ride_seats
   TO carpool_ops_viewer, carpool_ops_operator;

-- The ledger exists when the runner applies this file; guarded for psql -f.
DO $$
BEGIN
    IF to_regclass('public.ops_schema_migrations') IS NOT NULL THEN
        GRANT SELECT ON ops_schema_migrations TO carpool_ops_viewer, carpool_ops_operator;
    END IF;
END
$$;

GRANT EXECUTE ON FUNCTION
    get_system_health_summary(),
    ops_layer_version(),
    ops_preview_seat_fix(uuid),
    ops_preview_expire_ride(uuid),
    ops_preview_resolve_violation(uuid)
   TO carpool_ops_viewer, carpool_ops_operator;

GRANT EXECUTE ON FUNCTION
    expire_rides(),
    reconcile_seat_counts(),
    repair_missing_notifications(),
    check_system_invariants(),
    ops_apply_seat_fix(uuid, integer, integer, text, text),
    ops_expire_ride(uuid, text, text, boolean),
    ops_resolve_violation(uuid, text, text)
   TO carpool_ops_operator;
