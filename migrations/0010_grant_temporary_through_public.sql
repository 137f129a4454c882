-- Tenants need TEMPORARY on the database: REFRESH ... CONCURRENTLY builds its diff in temporary
-- tables. Each sign-up used to grant it to the new tenant role, which rewrote the one
-- `pg_database` row, whose ACL grew by an entry per tenant, and made sign-ups take turns on a
-- lock. PUBLIC holds it now, once: a tenant role may do what PUBLIC may do, and no other role
-- can use it, since CONNECT stays revoked from PUBLIC (harden.sql) and tenant roles cannot log
-- in. The grants of earlier sign-ups stay; they give nothing more.
DO $$
BEGIN
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO PUBLIC', current_database());
END
$$;
