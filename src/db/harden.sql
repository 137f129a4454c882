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
    -- Functions that let SQL change its own role or settings, read other objects' definitions,
    -- or reach the file system through large objects.
    FOR fn IN
        SELECT p.oid::regprocedure
        FROM pg_proc p
        WHERE p.pronamespace = 'pg_catalog'::regnamespace
          AND (p.proname IN ('set_config', 'pg_get_viewdef', 'pg_get_ruledef', 'pg_get_functiondef',
                             'pg_get_triggerdef', 'pg_get_indexdef', 'pg_get_constraintdef',
                             'query_to_xml', 'query_to_xml_and_xmlschema', 'query_to_xmlschema',
                             'cursor_to_xml', 'table_to_xml', 'table_to_xml_and_xmlschema',
                             'schema_to_xml', 'database_to_xml', 'loread', 'lowrite',
                             'pg_terminate_backend', 'pg_cancel_backend')
               OR p.proname LIKE 'lo\_%')
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
        -- The service itself still needs set_config (SET LOCAL does not, but drivers may).
        IF fn::text LIKE 'set_config(%' THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, owner_role);
        END IF;
    END LOOP;
END
$harden$;
