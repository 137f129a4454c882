-- Privilege hardening of a tinydevcrm database, run as a superuser (the managed cluster does it
-- on every start; with DATABASE_URL an administrator runs it once: see docs/OPERATIONS.md).
-- Idempotent. Tenants reach nothing that PUBLIC would otherwise grant them.
--
-- Run by an administrator who is not a superuser (Amazon RDS's master user, the database's
-- owner), only the database's own grants can be taken back: each statement runs on its own,
-- and one that is not allowed is skipped with a WARNING instead of undoing the others. The
-- service reports at start which protections are in force (`tdc_hardening`).
DO $harden$
DECLARE
    owner_role text := (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database());
    fn regprocedure;
    statements text[] := ARRAY[
        -- Tenants keep TEMPORARY through PUBLIC (REFRESH ... CONCURRENTLY builds its diff in
        -- temporary tables): only roles that may connect can use it, and PUBLIC may not.
        format('REVOKE CONNECT, CREATE ON DATABASE %I FROM PUBLIC', current_database()),
        format('GRANT TEMPORARY ON DATABASE %I TO PUBLIC', current_database()),
        'REVOKE ALL ON SCHEMA public FROM PUBLIC',
        -- Catalogs: every role may read them by default, which would show a tenant the names,
        -- sizes and view definitions of the others. Only the service role reads them now. (The
        -- shared catalogs' grants are cluster-wide: this is meant for a cluster of our own.)
        'REVOKE SELECT ON ALL TABLES IN SCHEMA pg_catalog FROM PUBLIC',
        'REVOKE SELECT ON ALL TABLES IN SCHEMA information_schema FROM PUBLIC',
        'REVOKE USAGE ON SCHEMA information_schema FROM PUBLIC',
        format('GRANT SELECT ON ALL TABLES IN SCHEMA pg_catalog TO %I', owner_role),
        format('GRANT SELECT ON ALL TABLES IN SCHEMA information_schema TO %I', owner_role),
        format('GRANT USAGE ON SCHEMA information_schema TO %I', owner_role)
    ];
    statement text;
BEGIN
    -- Functions that let SQL change its own role or settings, read other objects' definitions or
    -- data, reach the file system through large objects, signal other sessions, or hold locks
    -- that outlive a transaction on a pooled connection.
    FOR fn IN
        SELECT p.oid::regprocedure
        FROM pg_proc p
        WHERE p.pronamespace = 'pg_catalog'::regnamespace
          AND (p.proname IN ('set_config', 'pg_get_viewdef', 'pg_get_ruledef', 'pg_get_functiondef',
                             'pg_get_triggerdef', 'pg_get_indexdef', 'pg_get_constraintdef',
                             'loread', 'lowrite', 'pg_notify',
                             'pg_terminate_backend', 'pg_cancel_backend')
               OR p.proname LIKE 'lo\_%'
               OR p.proname LIKE '%\_to\_xml%'
               OR p.proname LIKE 'pg\_advisory%'
               OR p.proname LIKE 'pg\_try\_advisory%')
    LOOP
        statements := statements || format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
        -- The service itself still uses some of them: drivers call set_config, migrations take
        -- advisory locks, events are sent with pg_notify.
        IF fn::text LIKE 'set_config(%' OR fn::text LIKE 'pg\_notify(%'
           OR fn::text LIKE 'pg\_advisory%' OR fn::text LIKE 'pg\_try\_advisory%' THEN
            statements := statements || format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, owner_role);
        END IF;
    END LOOP;
    FOREACH statement IN ARRAY statements LOOP
        BEGIN
            EXECUTE statement;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'tinydevcrm hardening skipped (not allowed: %): %', SQLERRM, statement;
        END;
    END LOOP;
END
$harden$;
