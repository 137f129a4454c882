-- Cron jobs that refresh a view, and their run history.
--
-- next_run_at is the next tick to run (NULL while paused). A scheduler claims due rows with
-- FOR UPDATE SKIP LOCKED and advances next_run_at in the same transaction, so a tick is claimed
-- by one process only; the unique (job_id, scheduled_for) run row is the idempotency key.
-- lease_until marks a run in progress (a job never overlaps itself); a process that dies
-- mid-run leaves a lease that expires, and the next claim takes over.
CREATE TABLE tinydevcrm.jobs (
    job_id       uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES tinydevcrm.users (user_id) ON DELETE CASCADE,
    view_id      uuid NOT NULL REFERENCES tinydevcrm.views (view_id) ON DELETE CASCADE,
    crontab_def  text NOT NULL,
    timezone     text NOT NULL DEFAULT 'UTC',
    overlap      text NOT NULL DEFAULT 'skip' CONSTRAINT jobs_overlap_check
                 CHECK (overlap IN ('skip', 'queue')),
    retries      integer NOT NULL DEFAULT 0 CONSTRAINT jobs_retries_check
                 CHECK (retries BETWEEN 0 AND 10),
    enabled      boolean NOT NULL DEFAULT true,
    next_run_at  timestamptz,
    lease_until  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_due_idx ON tinydevcrm.jobs (next_run_at) WHERE enabled;
CREATE INDEX jobs_user_id_idx ON tinydevcrm.jobs (user_id, created_at);
CREATE INDEX jobs_view_id_idx ON tinydevcrm.jobs (view_id);

CREATE TABLE tinydevcrm.job_runs (
    run_id        uuid PRIMARY KEY,
    job_id        uuid NOT NULL REFERENCES tinydevcrm.jobs (job_id) ON DELETE CASCADE,
    scheduled_for timestamptz NOT NULL,
    claimed_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at    timestamptz,
    finished_at   timestamptz,
    status        text NOT NULL CONSTRAINT job_runs_status_check
                  CHECK (status IN ('running', 'succeeded', 'failed', 'skipped', 'timed_out')),
    attempts      integer NOT NULL DEFAULT 0,
    row_count     bigint,
    duration_ms   bigint,
    error         text,
    -- Which serve process ran it (host:pid:random), for operators and the exactly-once test.
    worker        text NOT NULL,
    CONSTRAINT job_runs_job_id_scheduled_for_key UNIQUE (job_id, scheduled_for)
);
CREATE INDEX job_runs_finished_at_idx ON tinydevcrm.job_runs (finished_at);
