//! Reads on the `events` table and the maintained totals (`event_totals`): statements the same
//! on both backends, written once.

use super::{records::event_counts, Db, Dialect, EventState};
use crate::model::EventCounts;

/// Statements on the events table and its totals.
pub(crate) trait EventSql {
    /// How many migrations were applied successfully.
    async fn migrations_applied(&mut self) -> sqlx::Result<i64>;
    async fn event_payload(&mut self, id: &str) -> sqlx::Result<Option<Vec<u8>>>;
    async fn event_ids(&mut self) -> sqlx::Result<Vec<String>>;
    async fn event_state(&mut self, id: &str) -> sqlx::Result<Option<EventState>>;
    async fn last_received_at(&mut self) -> sqlx::Result<Option<i64>>;
    async fn event_counts(&mut self) -> sqlx::Result<EventCounts>;
    async fn next_due_at(&mut self) -> sqlx::Result<Option<i64>>;
    /// Adds to the maintained counts in the transaction that changed them.
    async fn add_totals(&mut self, done: i64, dead_events: i64, letters: i64) -> sqlx::Result<()>;
    async fn recount_totals(&mut self) -> sqlx::Result<()>;
}

/// [`EventSql`] for one backend's connection type.
macro_rules! event_statements {
    ($conn:ty) => {
        impl EventSql for $conn {
            async fn migrations_applied(&mut self) -> sqlx::Result<i64> {
                sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                    .fetch_one(self)
                    .await
            }

            async fn event_payload(&mut self, id: &str) -> sqlx::Result<Option<Vec<u8>>> {
                sqlx::query_scalar("SELECT payload FROM events WHERE id = $1")
                    .bind(Self::text(id))
                    .fetch_optional(self)
                    .await
            }

            async fn event_ids(&mut self) -> sqlx::Result<Vec<String>> {
                sqlx::query_scalar("SELECT id FROM events ORDER BY seq")
                    .fetch_all(self)
                    .await
            }

            async fn event_state(&mut self, id: &str) -> sqlx::Result<Option<EventState>> {
                let row: Option<(String, i64, i64, String)> = sqlx::query_as(
                    "SELECT status, attempts, next_attempt_at, CAST(errors AS TEXT)
                       FROM events WHERE id = $1",
                )
                .bind(Self::text(id))
                .fetch_optional(self)
                .await?;
                row.map(|(status, attempts, next_attempt_at, errors)| {
                    Ok(EventState {
                        status: status
                            .parse()
                            .map_err(|err| sqlx::Error::Decode(Box::new(err)))?,
                        attempts,
                        next_attempt_at,
                        errors: serde_json::from_str(&errors).unwrap_or_default(),
                    })
                })
                .transpose()
            }

            async fn last_received_at(&mut self) -> sqlx::Result<Option<i64>> {
                sqlx::query_scalar("SELECT received_at FROM events ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(self)
                    .await
            }

            /// Open states are counted over the status index (bounded by the backlog); done
            /// and dead come from the maintained totals, so the cost does not grow with the
            /// events kept.
            async fn event_counts(&mut self) -> sqlx::Result<EventCounts> {
                let row = sqlx::query(
                    "SELECT (SELECT COUNT(*) FROM events WHERE status = 'pending') AS pending,
                            (SELECT COUNT(*) FROM events WHERE status = 'pending' AND attempts > 0)
                                AS retrying,
                            (SELECT COUNT(*) FROM events WHERE status = 'processing') AS processing,
                            (SELECT n FROM event_totals WHERE name = 'done') AS done,
                            (SELECT n FROM event_totals WHERE name = 'dead_letters') AS dead,
                            (SELECT n FROM event_totals WHERE name = 'dead_events') AS dead_events",
                )
                .fetch_one(self)
                .await?;
                event_counts(&row)
            }

            async fn next_due_at(&mut self) -> sqlx::Result<Option<i64>> {
                sqlx::query_scalar(
                    "SELECT MIN(next_attempt_at) FROM events
                      WHERE status IN ('pending', 'processing')",
                )
                .fetch_one(self)
                .await
            }

            /// Every completing transaction (on every replica) meets on these rows: one row at
            /// a time, in the same order everywhere, so two transactions never wait for each
            /// other in opposite orders (a deadlock on PostgreSQL); callers do this last, so
            /// the rows are held only for the commit.
            async fn add_totals(
                &mut self,
                done: i64,
                dead_events: i64,
                letters: i64,
            ) -> sqlx::Result<()> {
                if !<Self as Dialect>::LOCKS_ROWS {
                    // One writer holds the whole database (SQLite): one statement, one round
                    // trip to the database's thread instead of up to three.
                    if (done, dead_events, letters) != (0, 0, 0) {
                        sqlx::query(
                            "UPDATE event_totals SET n = n + CASE name
                                 WHEN 'dead_events' THEN $1 WHEN 'dead_letters' THEN $2 ELSE $3 END",
                        )
                        .bind(dead_events)
                        .bind(letters)
                        .bind(done)
                        .execute(&mut *self)
                        .await?;
                    }
                    return Ok(());
                }
                // Alphabetical: the order every transaction takes the rows in.
                for (name, delta) in [
                    ("dead_events", dead_events),
                    ("dead_letters", letters),
                    ("done", done),
                ] {
                    if delta != 0 {
                        sqlx::query("UPDATE event_totals SET n = n + $2 WHERE name = $1")
                            .bind(name)
                            .bind(delta)
                            .execute(&mut *self)
                            .await?;
                    }
                }
                Ok(())
            }

            async fn recount_totals(&mut self) -> sqlx::Result<()> {
                sqlx::query(
                    "UPDATE event_totals SET n = CASE name
                         WHEN 'done' THEN (SELECT COUNT(*) FROM events WHERE status = 'done')
                         WHEN 'dead_events' THEN (SELECT COUNT(*) FROM events WHERE status = 'dead')
                         ELSE (SELECT COUNT(*) FROM dead_letters) END",
                )
                .execute(self)
                .await?;
                Ok(())
            }
        }
    };
}

event_statements!(sqlx::SqliteConnection);
event_statements!(sqlx::PgConnection);

impl Db {
    /// The stored payload of one event, byte for byte.
    pub async fn event_payload(&self, id: &str) -> sqlx::Result<Option<Vec<u8>>> {
        read_conn!(self, |conn| conn.event_payload(id).await)
    }

    /// Ids of all stored events in arrival order (tests and the benchmark's loss check).
    pub async fn event_ids(&self) -> sqlx::Result<Vec<String>> {
        read_conn!(self, |conn| conn.event_ids().await)
    }

    /// One event's processing state, with attempts and errors (tests and the CLI).
    pub async fn event_state(&self, id: &str) -> sqlx::Result<Option<EventState>> {
        read_conn!(self, |conn| conn.event_state(id).await)
    }

    /// Receive time (epoch ms) of the newest stored event.
    pub async fn last_received_at(&self) -> sqlx::Result<Option<i64>> {
        read_conn!(self, |conn| conn.last_received_at().await)
    }

    /// How many events are in each state.
    pub async fn event_counts(&self) -> sqlx::Result<EventCounts> {
        read_conn!(self, |conn| conn.event_counts().await)
    }

    /// The earliest time any pending event is due, if any (to sleep until then).
    pub async fn next_due_at(&self) -> sqlx::Result<Option<i64>> {
        read_conn!(self, |conn| conn.next_due_at().await)
    }

    /// Recounts the maintained totals from the tables (part of `rebuild-stats`: heals any
    /// drift left by manual SQL). One write transaction; the counts use indexes.
    pub async fn recount_totals(&self) -> sqlx::Result<()> {
        write_tx!(self, |tx| tx.recount_totals().await)
    }
}
