-- The registry of tenant materialized views and their refresh history. The view itself lives
-- in the tenant's schema; sql_query is the checked, re-serialised statement it was created
-- from. refreshed_changes is the sum of the base tables' change counters at the last
-- successful refresh: equal sums mean nothing changed and a refresh can be skipped.
CREATE TABLE tinydevcrm.views (
    view_id           uuid PRIMARY KEY,
    user_id           uuid NOT NULL REFERENCES tinydevcrm.users (user_id) ON DELETE CASCADE,
    view_name         text NOT NULL,
    sql_query         text NOT NULL,
    unique_key        text[],
    volatile          boolean NOT NULL,
    base_relations    text[] NOT NULL,
    refreshed_changes bigint,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT views_user_id_view_name_key UNIQUE (user_id, view_name)
);

CREATE TABLE tinydevcrm.view_refreshes (
    refresh_id   uuid PRIMARY KEY,
    view_id      uuid NOT NULL REFERENCES tinydevcrm.views (view_id) ON DELETE CASCADE,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    status       text NOT NULL CONSTRAINT view_refreshes_status_check
                 CHECK (status IN ('refreshed', 'skipped', 'failed')),
    row_count    bigint,
    duration_ms  bigint NOT NULL,
    error        text
);
CREATE INDEX view_refreshes_view_id_started_at_idx ON tinydevcrm.view_refreshes (view_id, started_at DESC);
