-- Incremental views (issue 16): a view that declares a time bucket is kept as a table the
-- service maintains, recomputed bucket by bucket. `incremental` holds what the check found
-- (source table and column, bucket function and its constants); NULL for materialized views.
ALTER TABLE tinydevcrm.views ADD COLUMN incremental jsonb;

-- What appends left to recompute: one row per change of a base table of an incremental view,
-- written in the append's own transaction. A range (source values, as UTC wall-clock time
-- for timestamptz columns) names the buckets to recompute; no range and no full_refresh is an
-- append that touched no bucket (no rows); full_refresh is a change that cannot be bounded
-- (replace uploads, a dimension table, NULL source values). A refresh consumes the rows it
-- read, by id, so rows committed meanwhile stay for the next one.
CREATE TABLE tinydevcrm.view_pending (
    pending_id   bigserial PRIMARY KEY,
    view_id      uuid NOT NULL REFERENCES tinydevcrm.views (view_id) ON DELETE CASCADE,
    range_from   timestamp,
    range_to     timestamp,
    full_refresh boolean NOT NULL,
    CONSTRAINT view_pending_range_check
        CHECK ((range_from IS NULL) = (range_to IS NULL) AND (range_from IS NULL OR range_from <= range_to))
);
CREATE INDEX view_pending_view_id_idx ON tinydevcrm.view_pending (view_id, pending_id);
