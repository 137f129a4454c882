-- The row count the view's last successful refresh left, beside the change count it saw: both
-- are written by that refresh under the view's lock, so an incremental refresh (which reads
-- them on its snapshot, after taking the lock) adds its own change to the count of the refresh
-- that committed last, whatever order refreshes started in.
ALTER TABLE tinydevcrm.views ADD COLUMN refreshed_rows bigint;
