-- Hardening: routing queue-less updates, counts without table scans.

-- A state change that names no queue applies to the queues where its conversation is known:
-- found by conversation id alone.
CREATE INDEX conversations_by_conversation ON conversations (conversation_id);

-- Done events are pruned by age over the status index: a done row's next_attempt_at is its
-- processed_at (both are set together), so this index only cost a write per event.
DROP INDEX events_done_at;

-- Counts that would otherwise need a scan of the whole events table on every status snapshot,
-- kept in the same transactions that change them (and recounted by `gc-status rebuild-stats`).
-- done: events rows that are done; dead_events: events rows that are dead (dead letters and
-- tombstones of discarded ones); dead_letters: rows of dead_letters.
CREATE TABLE event_totals (
    name TEXT    PRIMARY KEY CHECK (name IN ('done', 'dead_events', 'dead_letters')),
    n    INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO event_totals (name, n)
SELECT 'done', COUNT(*) FROM events WHERE status = 'done'
UNION ALL SELECT 'dead_events', COUNT(*) FROM events WHERE status = 'dead'
UNION ALL SELECT 'dead_letters', COUNT(*) FROM dead_letters;
