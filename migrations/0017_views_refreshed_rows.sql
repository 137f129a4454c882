-- The row count the view's last successful refresh left, beside the change count it saw: both
-- are written by that refresh under the view's lock, so an incremental refresh (which reads
-- them on its snapshot, after taking the lock) adds its own change to the count of the refresh
-- that committed last, whatever order refreshes started in. `refreshed_rows_changes` is the
-- change count the row count belongs to: a process older than this migration updates
-- `refreshed_changes` alone, and the two then differ, so the count is not trusted (counted
-- again) until a newer process refreshes.
ALTER TABLE tinydevcrm.views
    ADD COLUMN refreshed_rows bigint,
    ADD COLUMN refreshed_rows_changes bigint;
