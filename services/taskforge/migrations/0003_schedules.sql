-- Cron schedules: what to run (a job template), when (cron in a time zone), what if late.

CREATE TABLE schedules (
    name         text PRIMARY KEY,
    cron         text        NOT NULL,
    timezone     text        NOT NULL DEFAULT 'UTC',
    job          jsonb       NOT NULL,
    catchup      text        NOT NULL DEFAULT 'skip'
        CHECK (catchup IN ('skip', 'latest', 'all')),
    paused       boolean     NOT NULL DEFAULT false,
    next_run_at  timestamptz NOT NULL,
    last_run_at  timestamptz,
    last_job_id  uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- The cron loop's index: schedules with a tick due.
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE NOT paused;
