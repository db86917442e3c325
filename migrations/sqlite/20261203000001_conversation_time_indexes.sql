-- Conversations by time, without a write to a random page for every new conversation.
--
-- The old index on ended_at held every open conversation under the key NULL, and SQLite
-- orders equal keys by the table's key (queue id, conversation id): with random conversation
-- ids each new conversation landed on a random page of that index, and each end moved it
-- again. Measured with random ids, a round of 96 conversation updates dirtied a third fewer
-- pages without those entries. Ended conversations are keyed by their end and open ones by
-- their last milestone: both are about now, so new entries go to the right-hand edge of
-- their index. Retention's prune (ended before a cutoff, or open and silent since one) reads
-- each through its own index (its expression is the prune's, word for word).
DROP INDEX conversations_ended_at;
CREATE INDEX conversations_ended_at ON conversations (ended_at) WHERE ended_at IS NOT NULL;
CREATE INDEX conversations_open_since ON conversations (coalesce(answered_at, queued_at))
    WHERE ended_at IS NULL;
