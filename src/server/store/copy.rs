//! `gc-status copy-to-postgres`: moves an existing SQLite database into an empty PostgreSQL
//! database, in one PostgreSQL transaction (all or nothing), so an instance can grow into
//! several replicas without losing its events, dead letters, statistics or audit trail.

use anyhow::{bail, Context as _};
use sqlx::{PgConnection, Row as _, SqlitePool};

use super::{postgres::pg_json, Db};

/// Rows read and written per statement.
const CHUNK: i64 = 2000;

/// What was copied, table by table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Copied {
    pub events: u64,
    pub dead_letters: u64,
    pub conversations: u64,
    pub other_rows: u64,
}

/// Copies every row of `from` (SQLite) into `to` (PostgreSQL, migrated and empty).
pub async fn sqlite_to_postgres(from: &Db, to: &Db) -> anyhow::Result<Copied> {
    let (Db::Sqlite(from), Db::Postgres(to)) = (from, to) else {
        bail!("copy-to-postgres copies a SQLite database (GC_STATUS_DATABASE_URL=sqlite://…) into a PostgreSQL one (--to postgres://…)");
    };
    let source = from.pool();
    let mut tx = to.pool().begin().await?;
    // The pool commits without waiting for the flush (see `postgres::open`); a copy must be
    // durable once it says so.
    sqlx::query("SET LOCAL synchronous_commit = on")
        .execute(&mut *tx)
        .await?;
    let existing: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM events) + (SELECT COUNT(*) FROM dead_letters)
              + (SELECT COUNT(*) FROM conversations)",
    )
    .fetch_one(&mut *tx)
    .await?;
    if existing > 0 {
        bail!(
            "the PostgreSQL database already holds events or statistics; copy into an empty \
             database (nothing was changed)"
        );
    }
    let mut copied = Copied {
        events: copy_events(source, &mut tx).await?,
        dead_letters: copy_dead_letters(source, &mut tx).await?,
        conversations: copy_conversations(source, &mut tx).await?,
        ..Copied::default()
    };
    copied.other_rows = copy_small_tables(source, &mut tx).await?;
    // Identity columns continue after the copied ids; the totals are recounted.
    sqlx::query(
        "SELECT setval(pg_get_serial_sequence('events', 'seq'),
                       coalesce((SELECT MAX(seq) FROM events), 0) + 1, false)",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "SELECT setval(pg_get_serial_sequence('audit_log', 'id'),
                       coalesce((SELECT MAX(id) FROM audit_log), 0) + 1, false)",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE event_totals SET n = CASE name
             WHEN 'done' THEN (SELECT COUNT(*) FROM events WHERE status = 'done')
             WHEN 'dead_events' THEN (SELECT COUNT(*) FROM events WHERE status = 'dead')
             ELSE (SELECT COUNT(*) FROM dead_letters) END",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit()
        .await
        .context("committing the copy into PostgreSQL")?;
    Ok(copied)
}

/// A JSON text column as `jsonb` accepts it (unparsable text becomes `fallback`).
fn json_text(text: Option<String>, fallback: &str) -> Option<String> {
    text.map(|t| match serde_json::from_str::<serde_json::Value>(&t) {
        Ok(value) => pg_json(&value),
        Err(_) => fallback.to_owned(),
    })
}

/// Text with NUL replaced (see `postgres::pg_text`).
fn text(value: String) -> String {
    super::postgres::pg_text(&value).into_owned()
}

async fn copy_events(source: &SqlitePool, tx: &mut PgConnection) -> anyhow::Result<u64> {
    let mut after = i64::MIN;
    let mut copied = 0;
    loop {
        let rows = sqlx::query(
            "SELECT seq, id, event_type, payload, received_at, status, attempts, next_attempt_at,
                    locked_until, claim_token, last_error, errors, processed_at, forward_state,
                    forward_attempts, forward_due_at, forward_token, forward_errors, forwarded_at
               FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(after)
        .bind(CHUNK)
        .fetch_all(source)
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get("seq")?;
        let mut c = EventColumns::default();
        for row in &rows {
            c.seq.push(row.try_get::<i64, _>("seq")?);
            c.id.push(text(row.try_get("id")?));
            c.event_type.push(text(row.try_get("event_type")?));
            c.payload.push(row.try_get::<Vec<u8>, _>("payload")?);
            c.received_at.push(row.try_get::<i64, _>("received_at")?);
            c.status.push(row.try_get::<String, _>("status")?);
            c.attempts.push(row.try_get::<i64, _>("attempts")?);
            c.next_attempt_at
                .push(row.try_get::<i64, _>("next_attempt_at")?);
            c.locked_until
                .push(row.try_get::<Option<i64>, _>("locked_until")?);
            c.claim_token
                .push(row.try_get::<Option<i64>, _>("claim_token")?);
            c.last_error
                .push(row.try_get::<Option<String>, _>("last_error")?.map(text));
            c.errors
                .push(json_text(row.try_get("errors")?, "[]").unwrap_or_else(|| "[]".into()));
            c.processed_at
                .push(row.try_get::<Option<i64>, _>("processed_at")?);
            c.forward_state
                .push(row.try_get::<Option<String>, _>("forward_state")?);
            c.forward_attempts
                .push(row.try_get::<i64, _>("forward_attempts")?);
            c.forward_due_at
                .push(row.try_get::<Option<i64>, _>("forward_due_at")?);
            c.forward_token
                .push(row.try_get::<Option<i64>, _>("forward_token")?);
            c.forward_errors
                .push(json_text(row.try_get("forward_errors")?, "[]"));
            c.forwarded_at
                .push(row.try_get::<Option<i64>, _>("forwarded_at")?);
        }
        sqlx::query(
            "INSERT INTO events (seq, id, event_type, payload, received_at, status, attempts,
                                 next_attempt_at, locked_until, claim_token, last_error, errors,
                                 processed_at, forward_state, forward_attempts, forward_due_at,
                                 forward_token, forward_errors, forwarded_at)
             OVERRIDING SYSTEM VALUE
             SELECT s, i, t, p, r, st, a, n, l, ct, le, e::jsonb, pa, fs, fa, fd, ft, fe::jsonb, fw
               FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::bytea[], $5::int8[],
                           $6::text[], $7::int8[], $8::int8[], $9::int8[], $10::int8[],
                           $11::text[], $12::text[], $13::int8[], $14::text[], $15::int8[],
                           $16::int8[], $17::int8[], $18::text[], $19::int8[])
                    AS x(s, i, t, p, r, st, a, n, l, ct, le, e, pa, fs, fa, fd, ft, fe, fw)",
        )
        .bind(&c.seq)
        .bind(&c.id)
        .bind(&c.event_type)
        .bind(&c.payload)
        .bind(&c.received_at)
        .bind(&c.status)
        .bind(&c.attempts)
        .bind(&c.next_attempt_at)
        .bind(&c.locked_until)
        .bind(&c.claim_token)
        .bind(&c.last_error)
        .bind(&c.errors)
        .bind(&c.processed_at)
        .bind(&c.forward_state)
        .bind(&c.forward_attempts)
        .bind(&c.forward_due_at)
        .bind(&c.forward_token)
        .bind(&c.forward_errors)
        .bind(&c.forwarded_at)
        .execute(&mut *tx)
        .await
        .context("copying events")?;
        copied += rows.len() as u64;
    }
    Ok(copied)
}

/// One chunk of `events`, column by column (PostgreSQL takes each as an array).
#[derive(Default)]
struct EventColumns {
    seq: Vec<i64>,
    id: Vec<String>,
    event_type: Vec<String>,
    payload: Vec<Vec<u8>>,
    received_at: Vec<i64>,
    status: Vec<String>,
    attempts: Vec<i64>,
    next_attempt_at: Vec<i64>,
    locked_until: Vec<Option<i64>>,
    claim_token: Vec<Option<i64>>,
    last_error: Vec<Option<String>>,
    errors: Vec<String>,
    processed_at: Vec<Option<i64>>,
    forward_state: Vec<Option<String>>,
    forward_attempts: Vec<i64>,
    forward_due_at: Vec<Option<i64>>,
    forward_token: Vec<Option<i64>>,
    forward_errors: Vec<Option<String>>,
    forwarded_at: Vec<Option<i64>>,
}

async fn copy_dead_letters(source: &SqlitePool, tx: &mut PgConnection) -> anyhow::Result<u64> {
    let mut after = String::new();
    let mut copied = 0;
    loop {
        let rows = sqlx::query(
            "SELECT id, event_type, queue_id, payload, attempts, errors, last_error,
                    received_at, dead_at, stage
               FROM dead_letters WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(&after)
        .bind(CHUNK)
        .fetch_all(source)
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get("id")?;
        let (mut ids, mut types, mut queues, mut payloads, mut attempts) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut errors, mut last_errors, mut received, mut dead_at, mut stages) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for row in &rows {
            ids.push(text(row.try_get("id")?));
            types.push(text(row.try_get("event_type")?));
            queues.push(row.try_get::<Option<String>, _>("queue_id")?.map(text));
            payloads.push(row.try_get::<Vec<u8>, _>("payload")?);
            attempts.push(row.try_get::<i64, _>("attempts")?);
            errors.push(json_text(row.try_get("errors")?, "[]").unwrap_or_else(|| "[]".into()));
            last_errors.push(text(row.try_get("last_error")?));
            received.push(row.try_get::<i64, _>("received_at")?);
            dead_at.push(row.try_get::<i64, _>("dead_at")?);
            stages.push(row.try_get::<String, _>("stage")?);
        }
        sqlx::query(
            "INSERT INTO dead_letters (id, event_type, queue_id, payload, attempts, errors,
                                       last_error, received_at, dead_at, stage)
             SELECT i, t, q, p, a, e::jsonb, le, r, d, s
               FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[], $5::int8[],
                           $6::text[], $7::text[], $8::int8[], $9::int8[], $10::text[])
                    AS x(i, t, q, p, a, e, le, r, d, s)",
        )
        .bind(&ids)
        .bind(&types)
        .bind(&queues)
        .bind(&payloads)
        .bind(&attempts)
        .bind(&errors)
        .bind(&last_errors)
        .bind(&received)
        .bind(&dead_at)
        .bind(&stages)
        .execute(&mut *tx)
        .await
        .context("copying dead letters")?;
        copied += rows.len() as u64;
    }
    Ok(copied)
}

async fn copy_conversations(source: &SqlitePool, tx: &mut PgConnection) -> anyhow::Result<u64> {
    let mut after = (String::new(), String::new());
    let mut copied = 0;
    loop {
        let rows = sqlx::query(
            "SELECT queue_id, conversation_id, media_type, queued_at, answered_at, ended_at,
                    outcome
               FROM conversations WHERE (queue_id, conversation_id) > (?, ?)
              ORDER BY queue_id, conversation_id LIMIT ?",
        )
        .bind(&after.0)
        .bind(&after.1)
        .bind(CHUNK)
        .fetch_all(source)
        .await?;
        let Some(last) = rows.last() else { break };
        after = (last.try_get("queue_id")?, last.try_get("conversation_id")?);
        let (mut queues, mut conversations, mut media) = (Vec::new(), Vec::new(), Vec::new());
        let (mut queued, mut answered, mut ended, mut outcomes) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for row in &rows {
            queues.push(text(row.try_get("queue_id")?));
            conversations.push(text(row.try_get("conversation_id")?));
            media.push(row.try_get::<Option<String>, _>("media_type")?.map(text));
            queued.push(row.try_get::<Option<i64>, _>("queued_at")?);
            answered.push(row.try_get::<Option<i64>, _>("answered_at")?);
            ended.push(row.try_get::<Option<i64>, _>("ended_at")?);
            outcomes.push(row.try_get::<Option<String>, _>("outcome")?.map(text));
        }
        sqlx::query(
            "INSERT INTO conversations (queue_id, conversation_id, media_type, queued_at,
                                        answered_at, ended_at, outcome)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[],
                                  $6::int8[], $7::text[])
             ON CONFLICT DO NOTHING",
        )
        .bind(&queues)
        .bind(&conversations)
        .bind(&media)
        .bind(&queued)
        .bind(&answered)
        .bind(&ended)
        .bind(&outcomes)
        .execute(&mut *tx)
        .await
        .context("copying conversations")?;
        copied += rows.len() as u64;
    }
    Ok(copied)
}

/// The small tables (observations, names, sessions, audit trail, samples), each read whole.
async fn copy_small_tables(source: &SqlitePool, tx: &mut PgConnection) -> anyhow::Result<u64> {
    let mut copied = 0;

    let rows: Vec<(String, String, i64, String)> =
        sqlx::query_as("SELECT queue_id, media_type, observed_at, figures FROM queue_observations")
            .fetch_all(source)
            .await?;
    for (queue, media, at, figures) in rows {
        sqlx::query(
            "INSERT INTO queue_observations (queue_id, media_type, observed_at, figures)
             VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT DO NOTHING",
        )
        .bind(text(queue))
        .bind(text(media))
        .bind(at)
        .bind(json_text(Some(figures), "{}"))
        .execute(&mut *tx)
        .await?;
        copied += 1;
    }

    let rows: Vec<(String, String)> = sqlx::query_as("SELECT queue_id, name FROM queue_names")
        .fetch_all(source)
        .await?;
    for (queue, name) in rows {
        sqlx::query(
            "INSERT INTO queue_names (queue_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(text(queue))
        .bind(text(name))
        .execute(&mut *tx)
        .await?;
        copied += 1;
    }

    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT id, data, expires_at FROM sessions")
            .fetch_all(source)
            .await?;
    for (id, data, expires_at) in rows {
        sqlx::query("INSERT INTO sessions (id, data, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(text(id))
            .bind(text(data))
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
        copied += 1;
    }

    let rows: Vec<(i64, i64, String, String, Option<i64>, String)> =
        sqlx::query_as("SELECT id, at, actor, action, count, detail FROM audit_log ORDER BY id")
            .fetch_all(source)
            .await?;
    for (id, at, actor, action, count, detail) in rows {
        sqlx::query(
            "INSERT INTO audit_log (id, at, actor, action, count, detail)
             OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(at)
        .bind(text(actor))
        .bind(text(action))
        .bind(count)
        .bind(text(detail))
        .execute(&mut *tx)
        .await?;
        copied += 1;
    }

    let rows: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT queue_id, minute, waiting FROM queue_samples")
            .fetch_all(source)
            .await?;
    for (queue, minute, waiting) in rows {
        sqlx::query(
            "INSERT INTO queue_samples (queue_id, minute, waiting) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(text(queue))
        .bind(minute)
        .bind(waiting)
        .execute(&mut *tx)
        .await?;
        copied += 1;
    }
    Ok(copied)
}
