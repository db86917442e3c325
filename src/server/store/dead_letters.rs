//! The dead letters, written once for both backends: filing (processing's and forwarding's),
//! pages for the console, API and CLI, and bulk replay and discard in short transactions.
//!
//! A letter's payload is not copied: the events row keeps it byte for byte for as long as the
//! letter exists (a discarded letter leaves its event row as a tombstone until retention, so a
//! redelivery is still recognised as a duplicate).

use sqlx::QueryBuilder;

use super::{
    records::{PageBy, BULK_CHUNK},
    Db, Statements,
};
use crate::server::domain::{DeadLetter, DeadLetterFilter, DeadLetterPage, Selection};

/// The dead letters' statements.
pub(crate) trait DeadLetterSql {
    /// Files the (already dead) events `seqs` as letters of the `payload` stage, with their
    /// attempts and errors so far; a letter filed again (a replayed event that failed again)
    /// takes the new attempts.
    async fn file_payload_letters(&mut self, seqs: &[i64], now: i64) -> sqlx::Result<()>;
    /// Files the (already dead) deliveries `seqs` as letters of the `sink` stage, with their
    /// delivery attempts and errors.
    async fn file_sink_letters(&mut self, seqs: &[i64], now: i64) -> sqlx::Result<()>;
    /// One page of the letters matching `filter`, and how many match in all.
    async fn letter_page(
        &mut self,
        filter: &DeadLetterFilter,
        page: PageBy<'_>,
    ) -> sqlx::Result<(Vec<DeadLetter>, i64)>;
    /// One letter with its payload.
    async fn letter(&mut self, id: &str) -> sqlx::Result<Option<DeadLetter>>;
    /// Up to `limit` ids of `selection` after `after`, in id order.
    async fn selected_ids(
        &mut self,
        selection: &Selection,
        after: &str,
        limit: i64,
    ) -> sqlx::Result<Vec<String>>;
    /// Deletes the letters `ids`; returns the ids that were there.
    async fn delete_letters(&mut self, ids: &[String]) -> sqlx::Result<Vec<String>>;
    /// Puts the dead events `ids` back as pending with attempts reset; returns how many.
    async fn revive_events(&mut self, ids: &[String], now: i64) -> sqlx::Result<u64>;
    /// Starts the dead deliveries of the events `ids` over (the events stay done).
    async fn restart_deliveries(&mut self, ids: &[String], now: i64) -> sqlx::Result<u64>;
}

/// A letter filed again (a replayed event that failed again) takes the new attempts.
pub(crate) const ON_REFILE: &str = "ON CONFLICT (id) DO UPDATE SET
    attempts = excluded.attempts, errors = excluded.errors, last_error = excluded.last_error,
    dead_at = excluded.dead_at, stage = excluded.stage";

/// The [`DeadLetterSql`] statements whose binds are the same on both backends, for each
/// backend's impl (`$db` is its `sqlx::Database`), with the SQL text of those that differ.
macro_rules! shared_dead_letter_statements {
    (
        db: $db:ty,
        file_payload_letters: $file_payload_letters:expr,
        file_sink_letters: $file_sink_letters:expr $(,)?
    ) => {
        async fn file_payload_letters(&mut self, seqs: &[i64], now: i64) -> sqlx::Result<()> {
            sqlx::query($file_payload_letters)
                .bind(now)
                .bind(<Self as $crate::server::store::Dialect>::seqs(seqs))
                .execute(self)
                .await?;
            Ok(())
        }

        async fn file_sink_letters(&mut self, seqs: &[i64], now: i64) -> sqlx::Result<()> {
            sqlx::query($file_sink_letters)
                .bind(now)
                .bind(<Self as $crate::server::store::Dialect>::seqs(seqs))
                .execute(self)
                .await?;
            Ok(())
        }

        async fn letter_page(
            &mut self,
            filter: &$crate::server::domain::DeadLetterFilter,
            page: $crate::server::store::records::PageBy<'_>,
        ) -> sqlx::Result<(Vec<$crate::server::domain::DeadLetter>, i64)> {
            use $crate::server::store::{dead_letters::push_filter, records::PageBy, Dialect};
            let text = |s: &str| <Self as Dialect>::text(s).into_owned();
            let mut count = sqlx::QueryBuilder::<$db>::new("SELECT COUNT(*) FROM dead_letters");
            push_filter(filter, &mut count, text);
            let total: i64 = count.build_query_scalar().fetch_one(&mut *self).await?;
            let mut list = sqlx::QueryBuilder::<$db>::new(
                "SELECT id, event_type, queue_id, attempts, last_error,
                        CAST(errors AS TEXT) AS errors, received_at, dead_at, stage
                   FROM dead_letters",
            );
            push_filter(filter, &mut list, text);
            match page {
                PageBy::Offset { limit, offset } => {
                    list.push(" ORDER BY dead_at DESC, id LIMIT ")
                        .push_bind(limit)
                        .push(" OFFSET ")
                        .push_bind(offset);
                }
                PageBy::Cursor { before, limit } => {
                    if let Some((dead_at, id)) = before {
                        list.push(" AND (dead_at, id) < (")
                            .push_bind(dead_at)
                            .push(", ")
                            .push_bind(text(id))
                            .push(")");
                    }
                    list.push(" ORDER BY dead_at DESC, id DESC LIMIT ")
                        .push_bind(limit);
                }
            }
            let rows = list.build().fetch_all(&mut *self).await?;
            let items = rows
                .iter()
                .map(|r| $crate::server::store::records::dead_letter(r, false))
                .collect::<sqlx::Result<_>>()?;
            Ok((items, total))
        }

        async fn letter(
            &mut self,
            id: &str,
        ) -> sqlx::Result<Option<$crate::server::domain::DeadLetter>> {
            // Letters filed before payloads stopped being copied still carry their own.
            let row = sqlx::query(
                "SELECT d.id, d.event_type, d.queue_id, d.attempts,
                        CAST(d.errors AS TEXT) AS errors, d.last_error, d.received_at,
                        d.dead_at, d.stage,
                        CASE WHEN length(d.payload) > 0 THEN d.payload ELSE e.payload END
                            AS payload
                   FROM dead_letters d LEFT JOIN events e ON e.id = d.id
                  WHERE d.id = $1",
            )
            .bind(<Self as $crate::server::store::Dialect>::text(id))
            .fetch_optional(self)
            .await?;
            row.map(|r| $crate::server::store::records::dead_letter(&r, true))
                .transpose()
        }

        async fn selected_ids(
            &mut self,
            selection: &$crate::server::domain::Selection,
            after: &str,
            limit: i64,
        ) -> sqlx::Result<Vec<String>> {
            use $crate::server::{
                domain::Selection,
                store::{dead_letters::push_filter, Dialect},
            };
            let text = |s: &str| <Self as Dialect>::text(s).into_owned();
            let mut query = sqlx::QueryBuilder::<$db>::new("SELECT id FROM dead_letters");
            match selection {
                Selection::Ids(ids) => {
                    let (open, close) = <Self as Dialect>::IN_TEXTS;
                    query
                        .push(" WHERE id ")
                        .push(open)
                        .push_bind(<Self as Dialect>::texts(ids))
                        .push(close);
                }
                Selection::Filter(filter) => push_filter(filter, &mut query, text),
            }
            query
                .push(" AND id > ")
                .push_bind(text(after))
                .push(" ORDER BY id LIMIT ")
                .push_bind(limit);
            query.build_query_scalar().fetch_all(self).await
        }

        async fn delete_letters(&mut self, ids: &[String]) -> sqlx::Result<Vec<String>> {
            use $crate::server::store::Dialect;
            let (open, close) = <Self as Dialect>::IN_TEXTS;
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "DELETE FROM dead_letters WHERE id {open}$1{close} RETURNING id"
            )))
            .bind(<Self as Dialect>::texts(ids))
            .fetch_all(self)
            .await
        }

        async fn revive_events(&mut self, ids: &[String], now: i64) -> sqlx::Result<u64> {
            use $crate::server::store::Dialect;
            let (open, close) = <Self as Dialect>::IN_TEXTS;
            let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE events
                    SET status = 'pending', attempts = 0, next_attempt_at = $1,
                        last_error = NULL, locked_until = NULL, claim_token = NULL
                  WHERE id {open}$2{close} AND status = 'dead'"
            )))
            .bind(now)
            .bind(<Self as Dialect>::texts(ids))
            .execute(self)
            .await?;
            Ok(done.rows_affected())
        }

        async fn restart_deliveries(&mut self, ids: &[String], now: i64) -> sqlx::Result<u64> {
            use $crate::server::store::Dialect;
            let (open, close) = <Self as Dialect>::IN_TEXTS;
            let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE events
                    SET forward_state = 'pending', forward_attempts = 0, forward_due_at = $1,
                        forward_token = NULL
                  WHERE id {open}$2{close} AND forward_state = 'dead'"
            )))
            .bind(now)
            .bind(<Self as Dialect>::texts(ids))
            .execute(self)
            .await?;
            Ok(done.rows_affected())
        }
    };
}
pub(crate) use shared_dead_letter_statements;

/// Appends `filter` as a `WHERE` clause. The error text matches case-insensitively on both
/// backends (`lower(…) LIKE lower(…)`: SQLite's `LIKE` ignores ASCII case, PostgreSQL's does
/// not).
pub(crate) fn push_filter<DB: sqlx::Database>(
    filter: &DeadLetterFilter,
    q: &mut QueryBuilder<DB>,
    text: impl Fn(&str) -> String,
) where
    String: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    i64: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    q.push(" WHERE 1 = 1");
    if let Some(t) = &filter.event_type {
        q.push(" AND event_type = ").push_bind(text(t));
    }
    if let Some(queue) = &filter.queue {
        q.push(" AND queue_id = ").push_bind(text(queue));
    }
    if let Some(error) = &filter.error {
        let escaped = text(error)
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        q.push(" AND lower(CAST(errors AS TEXT)) LIKE lower(")
            .push_bind(format!("%{escaped}%"))
            .push(") ESCAPE '\\'");
    }
    if let Some(since) = filter.since {
        q.push(" AND dead_at >= ").push_bind(since);
    }
    if let Some(until) = filter.until {
        q.push(" AND dead_at < ").push_bind(until);
    }
    if let Some(stage) = &filter.stage {
        q.push(" AND stage = ").push_bind(stage.as_str().to_owned());
    }
}

/// Files the (already dead) events `seqs` as dead letters (nothing to do for none).
pub(crate) async fn file_dead_letters(
    tx: &mut impl Statements,
    seqs: &[i64],
    now: i64,
) -> sqlx::Result<()> {
    if seqs.is_empty() {
        return Ok(());
    }
    tx.file_payload_letters(seqs, now).await
}

/// Puts the dead letters `ids` back: each event pending with attempts reset, or, for a letter
/// of the sink stage, its delivery started over. Only letters this transaction deleted are
/// replayed: one discarded (or replayed, on another replica) since the ids were read stays
/// as it is. Returns how many letters were replayed.
pub(crate) async fn replay_chunk(
    tx: &mut impl Statements,
    ids: &[String],
    now: i64,
) -> sqlx::Result<u64> {
    let removed = tx.delete_letters(ids).await?;
    if removed.is_empty() {
        return Ok(0);
    }
    let revived = tx.revive_events(&removed, now).await?;
    tx.restart_deliveries(&removed, now).await?;
    tx.add_totals(0, -(revived as i64), -(removed.len() as i64))
        .await?;
    Ok(removed.len() as u64)
}

/// Deletes the dead letters `ids` for good; returns how many there were.
pub(crate) async fn discard_chunk(tx: &mut impl Statements, ids: &[String]) -> sqlx::Result<u64> {
    let removed = tx.delete_letters(ids).await?.len();
    tx.add_totals(0, 0, -(removed as i64)).await?;
    Ok(removed as u64)
}

impl Db {
    /// Dead letters newest first, by offset (the admin API and CLI).
    pub async fn list_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        limit: i64,
        offset: i64,
    ) -> sqlx::Result<DeadLetterPage> {
        let page = PageBy::Offset { limit, offset };
        let (items, total) = read_conn!(self, |conn| conn.letter_page(filter, page).await)?;
        Ok(DeadLetterPage {
            items,
            total,
            limit,
            offset,
        })
    }

    /// Dead letters newest first, strictly older than `before` when given (cursor pages).
    pub async fn dead_letters_before(
        &self,
        filter: &DeadLetterFilter,
        before: Option<(i64, &str)>,
        limit: i64,
    ) -> sqlx::Result<(Vec<DeadLetter>, i64)> {
        let page = PageBy::Cursor { before, limit };
        read_conn!(self, |conn| conn.letter_page(filter, page).await)
    }

    pub async fn get_dead_letter(&self, id: &str) -> sqlx::Result<Option<DeadLetter>> {
        read_conn!(self, |conn| conn.letter(id).await)
    }

    /// Puts the selected dead letters back as pending with attempts reset.
    ///
    /// Works through the selection in chunks of [`BULK_CHUNK`], each read outside the write
    /// gate and replayed in its own short write transaction, so a replay of 100,000 letters
    /// never holds a lock for long: webhooks arriving meanwhile are acknowledged within their
    /// usual latency.
    pub async fn replay_dead_letters(&self, selection: &Selection, now: i64) -> sqlx::Result<u64> {
        let mut replayed = 0;
        let mut after = String::new();
        while let Some(ids) = self.next_selected(selection, &after).await? {
            after = ids.last().cloned().unwrap_or_default();
            replayed += write_tx!(self, |tx| replay_chunk(tx, &ids, now).await)?;
        }
        Ok(replayed)
    }

    /// Deletes the selected dead letters for good, in short transactions as replay does.
    /// Their event rows stay as tombstones until retention, so a redelivery is still
    /// recognised as a duplicate.
    pub async fn discard_dead_letters(&self, selection: &Selection) -> sqlx::Result<u64> {
        let mut discarded = 0;
        let mut after = String::new();
        while let Some(ids) = self.next_selected(selection, &after).await? {
            after = ids.last().cloned().unwrap_or_default();
            discarded += write_tx!(self, |tx| discard_chunk(tx, &ids).await)?;
        }
        Ok(discarded)
    }

    /// The next chunk of selected dead-letter ids after `after` (in id order); `None` when
    /// the selection is exhausted.
    async fn next_selected(
        &self,
        selection: &Selection,
        after: &str,
    ) -> sqlx::Result<Option<Vec<String>>> {
        let ids = read_conn!(self, |conn| {
            conn.selected_ids(selection, after, BULK_CHUNK).await
        })?;
        Ok((!ids.is_empty()).then_some(ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::test_store;

    /// Stores `ids` and dead-letters each at its first attempt.
    async fn dead_events(db: &Db, writer: &mut crate::server::store::WriterConn, ids: &[&str]) {
        let events: Vec<_> = ids
            .iter()
            .map(|id| crate::server::store::writer::NewEvent {
                id: (*id).to_owned(),
                event_type: "test".into(),
                payload: axum::body::Bytes::from(format!("{{\"id\":\"{id}\"}}")),
                received_at: 1_000,
                processed: None,
            })
            .collect();
        writer.commit_batch(&events).await.expect("store");
        let verdicts: Vec<_> = ids
            .iter()
            .map(|id| {
                let error = crate::server::domain::ProcessError::Permanent("bad".into());
                ((*id).to_owned(), Err(error))
            })
            .collect();
        let applied = db
            .complete_inline(&verdicts, 2_000, 3_000)
            .await
            .expect("apply");
        assert_eq!(applied.dead, ids.len() as u64);
    }

    #[tokio::test]
    async fn a_letter_discarded_while_a_bulk_replay_runs_over_its_page_stays_discarded() {
        let (_store, db, mut writer) = test_store().await;
        dead_events(&db, &mut writer, &["kept", "thrown"]).await;
        // The replay has read its page of ids; before it replays them, an admin discards one.
        let page = db
            .next_selected(&Selection::Filter(DeadLetterFilter::default()), "")
            .await
            .expect("read")
            .expect("a page");
        assert_eq!(page, ["kept", "thrown"]);
        let discarded = db
            .discard_dead_letters(&Selection::Ids(vec!["thrown".into()]))
            .await
            .expect("discard");
        assert_eq!(discarded, 1);
        let replayed = write_tx!(&db, |tx| replay_chunk(tx, &page, 4_000).await).expect("replay");
        assert_eq!(replayed, 1, "only the letter still there is replayed");
        let state = |id: &'static str| {
            let db = db.clone();
            async move {
                db.event_state(id)
                    .await
                    .expect("read")
                    .expect("stored")
                    .status
            }
        };
        assert_eq!(state("kept").await, "pending");
        assert_eq!(
            state("thrown").await,
            "dead",
            "the discarded letter's event stays dead"
        );
        let counts = db.event_counts().await.expect("counts");
        assert_eq!((counts.dead, counts.pending), (0, 1));
    }

    #[tokio::test]
    async fn the_error_filter_ignores_case_on_both_backends() {
        let (_store, db, mut writer) = test_store().await;
        dead_events(&db, &mut writer, &["one"]).await;
        for text in ["bad", "BAD", "Ba"] {
            let filter = DeadLetterFilter {
                error: Some(text.into()),
                ..DeadLetterFilter::default()
            };
            let page = db.list_dead_letters(&filter, 10, 0).await.expect("list");
            assert_eq!(page.total, 1, "`{text}` matches the error `bad`");
        }
        let filter = DeadLetterFilter {
            error: Some("b%d".into()),
            ..DeadLetterFilter::default()
        };
        let page = db.list_dead_letters(&filter, 10, 0).await.expect("list");
        assert_eq!(page.total, 0, "`%` is matched literally, not as a wildcard");
    }
}
