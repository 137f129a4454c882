-- Privilege hardening of a tinydevcrm database, run as a superuser (the managed cluster does it
-- on every start; with DATABASE_URL an administrator runs it once: see docs/OPERATIONS.md).
-- Idempotent. Tenants reach nothing that PUBLIC would otherwise grant them.
DO $harden$
DECLARE
    owner_role text := (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database());
    fn regprocedure;
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE 'REVOKE ALL ON SCHEMA public FROM PUBLIC';
    -- Catalogs: every role may read them by default, which would show a tenant the names,
    -- sizes and view definitions of the others. Only the service role reads them now. (The
    -- shared catalogs' grants are cluster-wide: this is meant for a cluster of our own.)
    EXECUTE 'REVOKE SELECT ON ALL TABLES IN SCHEMA pg_catalog FROM PUBLIC';
    EXECUTE 'REVOKE SELECT ON ALL TABLES IN SCHEMA information_schema FROM PUBLIC';
    EXECUTE 'REVOKE USAGE ON SCHEMA information_schema FROM PUBLIC';
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA pg_catalog TO %I', owner_role);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA information_schema TO %I', owner_role);
    EXECUTE format('GRANT USAGE ON SCHEMA information_schema TO %I', owner_role);
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
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
        -- The service itself still uses some of them: drivers call set_config, migrations take
        -- advisory locks, events are sent with pg_notify.
        IF fn::text LIKE 'set_config(%' OR fn::text LIKE 'pg\_notify(%'
           OR fn::text LIKE 'pg\_advisory%' OR fn::text LIKE 'pg\_try\_advisory%' THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, owner_role);
        END IF;
    END LOOP;
END
$harden$;
