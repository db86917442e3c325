-- The portal: sign-in sessions, the admin audit trail and per-minute queue samples.

-- tower-sessions records (see server/sessions.rs): the session's data as JSON.
CREATE TABLE sessions (
    id         TEXT    PRIMARY KEY,
    data       TEXT    NOT NULL,
    expires_at INTEGER NOT NULL                     -- epoch ms
) WITHOUT ROWID;
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- Every admin action: sign-in (and failed ones), sign-out, replay, discard.
CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,                        -- epoch ms
    actor  TEXT    NOT NULL,                        -- e.g. "admin session from 10.0.0.7"
    action TEXT    NOT NULL,                        -- sign_in, sign_in_failed, sign_out, replay, discard
    count  INTEGER,                                 -- events acted on
    detail TEXT    NOT NULL DEFAULT '{}'            -- JSON: ids or the filter
);

-- Waiting conversations per queue and minute (the peak of the minute), for the sparklines.
-- Pruned after two hours.
CREATE TABLE queue_samples (
    queue_id TEXT    NOT NULL,
    minute   INTEGER NOT NULL,                      -- epoch minutes
    waiting  INTEGER NOT NULL,
    PRIMARY KEY (queue_id, minute)
) WITHOUT ROWID;
CREATE INDEX queue_samples_minute ON queue_samples (minute);
