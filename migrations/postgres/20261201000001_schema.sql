-- gc-status on PostgreSQL: the same tables as the SQLite schema after its migrations up to
-- forwarding, in one step. Times are unix epoch milliseconds (BIGINT), as in SQLite.

-- Every webhook gc-status acknowledged, stored byte for byte before the 2xx was sent.
-- `id` is the envelope's own event id (or a derived one): a redelivery is stored once, across
-- every replica. `seq` keeps arrival order so work is claimed first-in, first-out.
CREATE TABLE events (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               TEXT    NOT NULL UNIQUE,
    event_type       TEXT    NOT NULL,
    payload          BYTEA   NOT NULL,
    received_at      BIGINT  NOT NULL,
    status           TEXT    NOT NULL DEFAULT 'pending'
                             CHECK (status IN ('pending', 'processing', 'done', 'dead')),
    attempts         BIGINT  NOT NULL DEFAULT 0,     -- claims so far (a crash counts too)
    next_attempt_at  BIGINT  NOT NULL,               -- due time; while processing, the lease end
    locked_until     BIGINT,
    claim_token      BIGINT,                         -- which claim holds the lease
    last_error       TEXT,
    errors           JSONB   NOT NULL DEFAULT '[]',  -- [{"at": ms, "error": "..."}]
    processed_at     BIGINT,
    -- Forwarding to the sink (NULL state: not to be forwarded).
    forward_state    TEXT    CHECK (forward_state IN ('pending', 'sending', 'done', 'dead')),
    forward_attempts BIGINT  NOT NULL DEFAULT 0,
    forward_due_at   BIGINT,                         -- due while pending, lease end while sending
    forward_token    BIGINT,
    forward_errors   JSONB,
    forwarded_at     BIGINT
);
-- Claims read due work in due order (a claim moves next_attempt_at to the lease end, so
-- pending and expired-lease rows share the index); done events are pruned by age over it.
CREATE INDEX events_status_due ON events (status, next_attempt_at);
CREATE INDEX events_retrying ON events (status) WHERE status = 'pending' AND attempts > 0;
CREATE INDEX events_forwarding ON events (forward_state, forward_due_at)
    WHERE forward_due_at IS NOT NULL;

-- Events that failed for good (processing or forwarding), for an admin to replay or discard.
-- The events row stays so a redelivery is still recognised as a duplicate; the payload is read
-- from it (an empty payload here means "see events").
CREATE TABLE dead_letters (
    id          TEXT    PRIMARY KEY,
    event_type  TEXT    NOT NULL,
    queue_id    TEXT,
    payload     BYTEA   NOT NULL,
    attempts    BIGINT  NOT NULL,
    errors      JSONB   NOT NULL,
    last_error  TEXT    NOT NULL,
    received_at BIGINT  NOT NULL,
    dead_at     BIGINT  NOT NULL,
    stage       TEXT    NOT NULL DEFAULT 'payload' CHECK (stage IN ('payload', 'sink'))
);
CREATE INDEX dead_letters_dead_at ON dead_letters (dead_at);

-- The queue a stored payload names, for filtering dead letters. A payload that is not JSON
-- PostgreSQL accepts (a \u0000 escape) names none instead of failing the statement.
CREATE FUNCTION payload_queue_id(payload BYTEA) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    doc JSONB;
BEGIN
    doc := convert_from(payload, 'UTF8')::JSONB;
    RETURN coalesce(doc #>> '{data,queueId}', doc #>> '{eventBody,queueId}',
                    doc #>> '{eventBody,group,queueId}', doc #>> '{detail,eventBody,queueId}',
                    doc #>> '{detail,eventBody,group,queueId}');
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;

-- Per-conversation queue state. Every column only moves one way (earliest time wins, the
-- outcome of the earliest end wins), so concurrent workers on several replicas applying events
-- in any order, or twice, give the same row.
CREATE TABLE conversations (
    queue_id        TEXT   NOT NULL,
    conversation_id TEXT   NOT NULL,
    media_type      TEXT,
    queued_at       BIGINT,
    answered_at     BIGINT,
    ended_at        BIGINT,
    outcome         TEXT,
    PRIMARY KEY (queue_id, conversation_id)
);
CREATE INDEX conversations_ended_at ON conversations (ended_at);
CREATE INDEX conversations_by_conversation ON conversations (conversation_id);

-- Latest queue observation figures per queue and media type (newest event time wins).
CREATE TABLE queue_observations (
    queue_id    TEXT   NOT NULL,
    media_type  TEXT   NOT NULL,
    observed_at BIGINT NOT NULL,
    figures     JSONB  NOT NULL,
    PRIMARY KEY (queue_id, media_type)
);

CREATE TABLE queue_names (
    queue_id TEXT PRIMARY KEY,
    name     TEXT NOT NULL
);

-- Counts that would otherwise need a scan of events on every status snapshot, kept in the
-- transactions that change them (recounted by `gc-status rebuild-stats`).
CREATE TABLE event_totals (
    name TEXT   PRIMARY KEY CHECK (name IN ('done', 'dead_events', 'dead_letters')),
    n    BIGINT NOT NULL
);
INSERT INTO event_totals (name, n) VALUES ('done', 0), ('dead_events', 0), ('dead_letters', 0);

-- The portal: sign-in sessions, the audit trail, per-minute queue samples.
CREATE TABLE sessions (
    id         TEXT   PRIMARY KEY,
    data       TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE audit_log (
    id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     BIGINT NOT NULL,
    actor  TEXT   NOT NULL,
    action TEXT   NOT NULL,
    count  BIGINT,
    detail TEXT   NOT NULL DEFAULT '{}'
);

CREATE TABLE queue_samples (
    queue_id TEXT   NOT NULL,
    minute   BIGINT NOT NULL,
    waiting  BIGINT NOT NULL,
    PRIMARY KEY (queue_id, minute)
);
CREATE INDEX queue_samples_minute ON queue_samples (minute);
