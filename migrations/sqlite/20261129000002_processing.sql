-- Processing: events can now be dead-lettered, keep every attempt's error, and are claimed
-- under a lease identified by a claim token. SQLite cannot change a CHECK constraint, so the
-- events table is rebuilt with the wider status set.
CREATE TABLE events_v2 (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    event_type      TEXT    NOT NULL,
    payload         BLOB    NOT NULL,
    received_at     INTEGER NOT NULL,               -- unix epoch milliseconds
    status          TEXT    NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'processing', 'done', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,     -- claims so far (a crash counts too)
    next_attempt_at INTEGER NOT NULL,               -- due time; while processing, the lease end
    locked_until    INTEGER,                        -- lease end while a worker holds it
    claim_token     INTEGER,                        -- which claim holds the lease
    last_error      TEXT,
    errors          TEXT    NOT NULL DEFAULT '[]',  -- JSON [{"at": ms, "error": "..."}]
    processed_at    INTEGER                         -- when it became done
);
INSERT INTO events_v2 (seq, id, event_type, payload, received_at, status, attempts,
                       next_attempt_at, locked_until, last_error)
SELECT seq, id, event_type, payload, received_at, status, attempts,
       next_attempt_at, locked_until, last_error
FROM events;
DROP TABLE events;
ALTER TABLE events_v2 RENAME TO events;

-- Claims read due work in due order: pending and expired-lease rows share one index range
-- because a claim moves next_attempt_at to the lease end.
CREATE INDEX events_status_due ON events (status, next_attempt_at);
-- Retention prunes done events by age.
CREATE INDEX events_done_at ON events (processed_at) WHERE status = 'done';

-- Events that failed for good, waiting for an admin to replay or discard them.
-- The events row stays (status 'dead') so a redelivery is still recognised as a duplicate.
CREATE TABLE dead_letters (
    id          TEXT    PRIMARY KEY,
    event_type  TEXT    NOT NULL,
    queue_id    TEXT,                               -- for filtering, when the payload names one
    payload     BLOB    NOT NULL,                   -- the original body, byte for byte
    attempts    INTEGER NOT NULL,
    errors      TEXT    NOT NULL,                   -- JSON [{"at": ms, "error": "..."}]
    last_error  TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    dead_at     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX dead_letters_dead_at ON dead_letters (dead_at);

-- Per-conversation queue state. Every column only ever moves one way (earliest time wins,
-- first outcome of the earliest end wins), so applying events in any order, or twice, gives
-- the same row: out-of-order and duplicate events cannot skew the statistics.
CREATE TABLE conversations (
    queue_id        TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    media_type      TEXT,
    queued_at       INTEGER,                        -- entered the queue (ms)
    answered_at     INTEGER,                        -- connected to an agent (ms)
    ended_at        INTEGER,                        -- left the queue or disconnected (ms)
    outcome         TEXT,                           -- ACD outcome when known
    PRIMARY KEY (queue_id, conversation_id)
) WITHOUT ROWID;
CREATE INDEX conversations_ended_at ON conversations (ended_at);

-- Latest queue observation figures per queue and media type (newest event time wins).
CREATE TABLE queue_observations (
    queue_id    TEXT    NOT NULL,
    media_type  TEXT    NOT NULL,
    observed_at INTEGER NOT NULL,
    figures     TEXT    NOT NULL,                   -- JSON object of the observed metrics
    PRIMARY KEY (queue_id, media_type)
) WITHOUT ROWID;

-- Queue names seen in payloads.
CREATE TABLE queue_names (
    queue_id TEXT PRIMARY KEY,
    name     TEXT NOT NULL
) WITHOUT ROWID;

-- The page and the stream count retrying events often; keep that count off the table scan.
CREATE INDEX events_retrying ON events (status) WHERE status = 'pending' AND attempts > 0;
