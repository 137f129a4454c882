-- SSE channels and their events.
--
-- A channel watches a view (created from a job, it watches that job's view). Every refresh
-- appends one event per watching channel in the refresh's own transaction, numbering it from
-- the channel's last_seq under the channel row's lock: sequence numbers are gapless and in
-- commit order per channel, so a client resuming after id N misses nothing. NOTIFY carries
-- only "channel_id seq". pruned_through is the highest seq deleted by retention: a client
-- resuming from before it gets a reset event.
CREATE TABLE tinydevcrm.channels (
    channel_id     uuid PRIMARY KEY,
    user_id        uuid NOT NULL REFERENCES tinydevcrm.users (user_id) ON DELETE CASCADE,
    view_id        uuid NOT NULL REFERENCES tinydevcrm.views (view_id) ON DELETE CASCADE,
    job_id         uuid REFERENCES tinydevcrm.jobs (job_id) ON DELETE SET NULL,
    last_seq       bigint NOT NULL DEFAULT 0,
    pruned_through bigint NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX channels_user_id_idx ON tinydevcrm.channels (user_id, created_at);
CREATE INDEX channels_view_id_idx ON tinydevcrm.channels (view_id);
CREATE INDEX channels_job_id_idx ON tinydevcrm.channels (job_id);

CREATE TABLE tinydevcrm.events (
    channel_id uuid NOT NULL REFERENCES tinydevcrm.channels (channel_id) ON DELETE CASCADE,
    seq        bigint NOT NULL,
    data       jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, seq)
);
CREATE INDEX events_created_at_idx ON tinydevcrm.events (created_at);

-- Which refresh (manual or job run) produced an event.
ALTER TABLE tinydevcrm.view_refreshes ADD COLUMN job_run_id uuid;
