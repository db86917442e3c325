-- Each replica's events/s over the last minute (ingested, processed), published whenever it
-- reads a status snapshot, so the wallboard on every replica shows the same sums.
CREATE TABLE replica_rates (
    replica      TEXT             PRIMARY KEY,   -- host, process id and a random part
    ingested     DOUBLE PRECISION NOT NULL,      -- events/s
    processed    DOUBLE PRECISION NOT NULL,      -- events/s
    published_at BIGINT           NOT NULL       -- epoch ms
);
