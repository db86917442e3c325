-- Forwarding: each event done while a sink is configured is also delivered downstream, as its
-- own step with its own attempts, lease and errors (the statistics never wait for it).

-- NULL: not to be forwarded (no sink configured when it was processed, or not done).
ALTER TABLE events ADD COLUMN forward_state TEXT
    CHECK (forward_state IN ('pending', 'sending', 'done', 'dead'));
ALTER TABLE events ADD COLUMN forward_attempts INTEGER NOT NULL DEFAULT 0;
-- Due time while pending, the lease end while sending; NULL once delivered or dead, so the
-- index below holds only the deliveries still to make.
ALTER TABLE events ADD COLUMN forward_due_at INTEGER;
ALTER TABLE events ADD COLUMN forward_token INTEGER;     -- which claim holds the lease
ALTER TABLE events ADD COLUMN forward_errors TEXT;       -- JSON [{"at": ms, "error": "..."}]
ALTER TABLE events ADD COLUMN forwarded_at INTEGER;      -- when the sink accepted it (ms)

CREATE INDEX events_forwarding ON events (forward_state, forward_due_at)
    WHERE forward_due_at IS NOT NULL;

-- Which step failed: the payload (processing) or the sink (forwarding). Replay redoes that step.
ALTER TABLE dead_letters ADD COLUMN stage TEXT NOT NULL DEFAULT 'payload'
    CHECK (stage IN ('payload', 'sink'));
