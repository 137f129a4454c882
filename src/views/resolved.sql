-- What a just-created view refers to that a tenant may not use, as (kind, name) rows; no row
-- means the view is allowed. $1: the view's _RETURN rule. $2..$5: ids read from its stored query
-- tree (relations, functions, operators, types). $6: the tenant's schema. $7: the allowed
-- function names. $8: the view. Dependencies PostgreSQL recorded (pg_depend) are added to the
-- ids read from the tree: a dependency on anything but these kinds is refused as well. Types
-- are followed into array elements, domain bases and composite columns: a value of a catalog's
-- row type carries `reg*` columns whose output names any object by id.
WITH RECURSIVE
dep AS (
    SELECT refclassid, refobjid FROM pg_catalog.pg_depend
    WHERE classid = 'pg_catalog.pg_rewrite'::regclass AND objid = $1::int8::oid AND deptype = 'n'
),
tenant AS (
    SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $6
),
rel AS (
    SELECT unnest($2::int8[])::oid AS oid
    UNION SELECT refobjid FROM dep WHERE refclassid = 'pg_catalog.pg_class'::regclass
),
fn AS (
    SELECT unnest($3::int8[])::oid AS oid
    UNION SELECT refobjid FROM dep WHERE refclassid = 'pg_catalog.pg_proc'::regclass
),
op AS (
    SELECT unnest($4::int8[])::oid AS oid
    UNION SELECT refobjid FROM dep WHERE refclassid = 'pg_catalog.pg_operator'::regclass
),
ty0 AS (
    SELECT unnest($5::int8[])::oid AS oid
    UNION SELECT refobjid FROM dep WHERE refclassid = 'pg_catalog.pg_type'::regclass
    UNION SELECT a.atttypid FROM pg_catalog.pg_attribute a
          JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
          WHERE c.relnamespace = (SELECT oid FROM tenant) AND c.relname = $8 AND a.attnum > 0
),
ty AS (
    SELECT oid FROM ty0
    UNION
    SELECT inner_type.oid
    FROM ty JOIN pg_catalog.pg_type t ON t.oid = ty.oid,
    LATERAL (
        SELECT t.typelem WHERE t.typelem <> 0
        UNION ALL SELECT t.typbasetype WHERE t.typbasetype <> 0
        UNION ALL SELECT a.atttypid FROM pg_catalog.pg_attribute a
                  WHERE t.typrelid <> 0 AND a.attrelid = t.typrelid AND a.attnum > 0
    ) AS inner_type(oid)
)
SELECT 'relation', COALESCE(c.relname::text, r.oid::text)
FROM rel r LEFT JOIN pg_catalog.pg_class c ON c.oid = r.oid
WHERE c.oid IS NULL OR c.relnamespace IS DISTINCT FROM (SELECT oid FROM tenant)
   OR c.relkind NOT IN ('r', 'p', 'm')
UNION ALL
SELECT 'function', COALESCE(p.proname::text, f.oid::text)
FROM fn f LEFT JOIN pg_catalog.pg_proc p ON p.oid = f.oid
WHERE p.oid IS NULL OR p.pronamespace <> 'pg_catalog'::regnamespace
   OR NOT (p.proname = ANY($7::text[])
           OR p.proname LIKE 'in\_range'
           OR EXISTS (SELECT 1 FROM pg_catalog.pg_operator o
                      WHERE o.oprcode = p.oid AND o.oprnamespace = 'pg_catalog'::regnamespace)
           OR EXISTS (SELECT 1 FROM pg_catalog.pg_cast k WHERE k.castfunc = p.oid))
UNION ALL
SELECT 'operator', COALESCE(o.oprname::text, x.oid::text)
FROM op x LEFT JOIN pg_catalog.pg_operator o ON o.oid = x.oid
LEFT JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode
WHERE o.oid IS NULL OR o.oprnamespace <> 'pg_catalog'::regnamespace
   OR p.pronamespace IS DISTINCT FROM 'pg_catalog'::regnamespace
UNION ALL
SELECT 'type', pg_catalog.format_type(t.oid, NULL)
FROM ty x JOIN pg_catalog.pg_type t ON t.oid = x.oid
WHERE t.typnamespace IS DISTINCT FROM 'pg_catalog'::regnamespace
      AND t.typnamespace IS DISTINCT FROM (SELECT oid FROM tenant)
   OR (t.typnamespace = 'pg_catalog'::regnamespace
       AND (t.typname ~ '^_?reg' OR t.typname IN ('xml', '_xml', 'pg_node_tree', 'aclitem', '_aclitem')
            OR t.typrelid <> 0))
UNION ALL
SELECT 'object', pg_catalog.pg_describe_object(d.refclassid, d.refobjid, 0)
FROM dep d
WHERE d.refclassid NOT IN ('pg_catalog.pg_class'::regclass, 'pg_catalog.pg_proc'::regclass,
                           'pg_catalog.pg_operator'::regclass, 'pg_catalog.pg_type'::regclass,
                           'pg_catalog.pg_collation'::regclass, 'pg_catalog.pg_namespace'::regclass)
   OR (d.refclassid = 'pg_catalog.pg_namespace'::regclass AND d.refobjid <> (SELECT oid FROM tenant))
