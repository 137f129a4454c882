-- The relations a user can read rows of, tables and views in one namespace (as in the tenant's
-- schema), so the rows reader finds either, with its columns and keys, in one statement
-- without naming each feature's registry.
CREATE VIEW tinydevcrm.relations AS
    SELECT user_id, table_name AS relation_name, 'table'::text AS kind FROM tinydevcrm.tables
    UNION ALL
    SELECT user_id, view_name, 'view'::text FROM tinydevcrm.views;
