-- The aggregate figures (t*/n* metrics) of queue observations belong to their 30-minute
-- interval, not to "now": kept per queue, media type and interval (the newest report of an
-- interval wins), so today is the sum over today's intervals and the current one is its own.
CREATE TABLE queue_intervals (
    queue_id       TEXT   NOT NULL,
    media_type     TEXT   NOT NULL,
    interval_start BIGINT NOT NULL,
    interval_end   BIGINT NOT NULL,
    observed_at    BIGINT NOT NULL,
    figures        JSONB  NOT NULL,
    PRIMARY KEY (queue_id, media_type, interval_start)
);
CREATE INDEX queue_intervals_start ON queue_intervals (interval_start);
