-- Every webhook gc-status acknowledged, stored byte for byte before the 2xx was sent.
-- `id` is the envelope's own event id (or the body's SHA-256): a redelivery is stored once.
-- `seq` keeps arrival order so work can be claimed first-in, first-out.
CREATE TABLE events (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    event_type      TEXT    NOT NULL,
    payload         BLOB    NOT NULL,
    received_at     INTEGER NOT NULL,               -- unix epoch milliseconds
    status          TEXT    NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'processing', 'done')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,               -- unix epoch milliseconds
    locked_until    INTEGER,                        -- lease end while a worker holds it
    last_error      TEXT
);

-- Serves both "what is due" for workers and the per-status counts on the page.
CREATE INDEX events_status_due ON events (status, next_attempt_at);
