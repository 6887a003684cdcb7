-- jobs and their history: the record of every job and every state change.

CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    queue            text        NOT NULL,
    type             text        NOT NULL,
    payload          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status           text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending','queued','running','retrying','completed','dead','cancelled')),
    priority         integer     NOT NULL DEFAULT 0,
    attempts         integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL CHECK (max_attempts >= 1),
    run_at           timestamptz NOT NULL DEFAULT now(),
    timeout_seconds  double precision NOT NULL CHECK (timeout_seconds > 0),
    idempotency_key  text,
    request_hash     text,
    traceparent      text,
    tracestate       text,
    stream_id        text,
    lease_expires_at timestamptz,
    worker           text,
    last_error       text,
    result           jsonb,
    cancel_requested boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz
);

CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The dispatcher's index: only rows waiting to be sent are in it, so it stays small.
CREATE INDEX jobs_due ON jobs (priority DESC, run_at)
    WHERE status IN ('pending', 'retrying');
CREATE INDEX jobs_status_created ON jobs (status, created_at DESC, id DESC);
CREATE INDEX jobs_queue_status ON jobs (queue, status);
CREATE INDEX jobs_type_created ON jobs (type, created_at DESC, id DESC);
CREATE INDEX jobs_created ON jobs (created_at DESC, id DESC);
-- The reaper's index: running rows by lease expiry.
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE status = 'running';

CREATE TABLE job_events (
    id          bigserial   PRIMARY KEY,
    job_id      uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    from_status text,
    to_status   text        NOT NULL,
    attempt     integer     NOT NULL,
    actor       text        NOT NULL,
    error       text
);
CREATE INDEX job_events_job ON job_events (job_id, id);

-- One wake-up per INSERT statement (not per row): the dispatcher coalesces the rest.
CREATE FUNCTION taskforge_notify_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('taskforge_jobs', '');
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_inserted AFTER INSERT ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION taskforge_notify_jobs();

CREATE TABLE queues (
    name        text PRIMARY KEY,
    paused      boolean     NOT NULL DEFAULT false,
    concurrency integer     CHECK (concurrency IS NULL OR concurrency >= 1),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
