-- The registry of tenant tables. The data itself lives in the tenant's schema; this row is what
-- the API looks tables up by (so another tenant's table is simply not found), and its
-- change_count is bumped by every ingest (views use it to skip refreshes of unchanged data).
CREATE TABLE tinydevcrm.tables (
    table_id     uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES tinydevcrm.users (user_id) ON DELETE CASCADE,
    table_name   text NOT NULL,
    change_count bigint NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tables_user_id_table_name_key UNIQUE (user_id, table_name)
);
