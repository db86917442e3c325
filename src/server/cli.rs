//! Operator commands on the same binary: `gc-status dlq …`, `gc-status rebuild-stats`,
//! `gc-status forward` and `gc-status copy-to-postgres`.
//! They open the database directly (applying migrations), so no server needs to run.

use std::io::{BufRead as _, Write as _};

use anyhow::{bail, Context as _};

use super::{
    config::{Command, Config, DlqAction, DlqFilterArgs, SessionsAction},
    dead_letters,
    domain::{now_ms, parse_time, DeadLetterFilter, FilterText, Selection},
    store::{self, Db},
    worker,
};

/// Who the audit trail names for actions taken with the CLI.
const CLI_ACTOR: &str = "gc-status CLI";

pub async fn run(config: &Config, command: &Command) -> anyhow::Result<()> {
    // An operator's command may wait for a busy server's write lock far longer than a webhook
    // would (it answers no sender): under load, 2 s was seen to run out.
    let patience = config
        .store_timeout()
        .max(std::time::Duration::from_secs(15));
    let (db, writer) = store::open(&config.database_url, patience).await?;
    drop(writer);
    let result = match command {
        Command::RebuildStats => {
            let applied = worker::rebuild_stats(&db, &config.worker.rules()).await?;
            println!("rebuilt queue statistics from {applied} processed events");
            Ok(())
        }
        Command::Dlq { action } => dlq(&db, action).await,
        Command::Sessions { action } => sessions(&db, action).await,
        Command::Forward { since, until } => forward(&db, since, until.as_deref()).await,
        Command::CopyToPostgres { to } => copy_to_postgres(config, &db, to).await,
    };
    db.close().await;
    result
}

fn filter(args: &DlqFilterArgs) -> anyhow::Result<DeadLetterFilter> {
    // The same parsing as the admin API and the console, so all accept the same filters.
    FilterText {
        event_type: args.event_type.clone(),
        queue: args.queue.clone(),
        error: args.error.clone(),
        since: args.since.clone(),
        until: args.until.clone(),
        stage: args.stage.clone(),
    }
    .parse()
    .map_err(|e| anyhow::anyhow!("{e}"))
}

fn selection(ids: &[String], all: bool, args: &DlqFilterArgs) -> anyhow::Result<Selection> {
    match (ids.is_empty(), all) {
        (false, false) => Ok(Selection::Ids(ids.to_vec())),
        (true, true) => Ok(Selection::Filter(filter(args)?)),
        (false, true) => bail!("give either ids or --all with filters, not both"),
        (true, false) => bail!("give the ids to act on, or --all (with optional filters)"),
    }
}

/// The role a stored session is signed in as (`None`: not signed in, or unreadable).
fn session_role(data: &str) -> Option<String> {
    let data: serde_json::Value = serde_json::from_str(data).ok()?;
    data.get(crate::server::portal::signin::SESSION_KEY)?
        .get("role")?
        .as_str()
        .map(str::to_owned)
}

async fn sessions(db: &Db, action: &SessionsAction) -> anyhow::Result<()> {
    let all = db.list_sessions(now_ms()).await?;
    match action {
        SessionsAction::List => {
            let mut by_role = std::collections::BTreeMap::<String, usize>::new();
            for (_, data) in &all {
                let role = session_role(data).unwrap_or_else(|| "not signed in".to_owned());
                *by_role.entry(role).or_default() += 1;
            }
            if by_role.is_empty() {
                println!("no sessions");
            }
            for (role, n) in by_role {
                println!("{role}: {n}");
            }
            Ok(())
        }
        SessionsAction::Revoke { all: every, role } => {
            if !every && role.is_none() {
                bail!("give --all, or --role admin|viewer");
            }
            let mut ended = 0u64;
            for (id, data) in &all {
                if *every || session_role(data).as_deref() == role.as_deref() {
                    db.delete_session(id).await?;
                    ended += 1;
                }
            }
            let scope = role.as_deref().unwrap_or("all");
            crate::server::audit::record(
                db,
                CLI_ACTOR,
                "sessions_revoked",
                Some(ended),
                serde_json::json!({ "role": scope }),
            )
            .await;
            println!("ended {ended} sessions ({scope})");
            Ok(())
        }
    }
}

/// Copies the SQLite database into the PostgreSQL one at `to`.
async fn copy_to_postgres(config: &Config, from: &Db, to: &str) -> anyhow::Result<()> {
    if store::Backend::of(to)? != store::Backend::Postgres {
        bail!("--to must name a PostgreSQL database (postgres://user:password@host/database)");
    }
    let (target, writer) = store::open(to, config.store_timeout()).await?;
    drop(writer);
    let copied = store::copy::sqlite_to_postgres(from, &target).await;
    target.close().await;
    let copied = copied?;
    println!(
        "copied {} events, {} dead letters, {} conversations and {} other rows into {}; \
         start the replicas with GC_STATUS_DATABASE_URL set to it",
        copied.events,
        copied.dead_letters,
        copied.conversations,
        copied.other_rows,
        store::redact_url(to)
    );
    Ok(())
}

/// Queues done events received in `[since, until)` for the sink.
async fn forward(db: &Db, since: &str, until: Option<&str>) -> anyhow::Result<()> {
    let time = |field: &str, text: &str| {
        parse_time(field, text).map_err(|e| anyhow::anyhow!("--{field}: {e}"))
    };
    let now = now_ms();
    let since = time("since", since)?;
    let until = until.map(|u| time("until", u)).transpose()?.unwrap_or(now);
    let queued = db.queue_for_forwarding(since, until, now).await?;
    println!(
        "queued {queued} processed events for the sink; a gc-status with GC_STATUS_SINK_URL set delivers them"
    );
    Ok(())
}

fn ms_to_text(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

async fn dlq(db: &Db, action: &DlqAction) -> anyhow::Result<()> {
    match action {
        DlqAction::List {
            filter: args,
            limit,
            offset,
        } => {
            let page = db
                .list_dead_letters(&filter(args)?, (*limit).clamp(1, 10_000), (*offset).max(0))
                .await?;
            println!(
                "{} dead letter(s) match; showing {} from offset {}",
                page.total,
                page.items.len(),
                page.offset
            );
            for letter in page.items {
                println!(
                    "{}  {}  {}  attempts={}  queue={}  {}",
                    letter.id,
                    ms_to_text(letter.dead_at),
                    letter.event_type,
                    letter.attempts,
                    letter.queue_id.as_deref().unwrap_or("-"),
                    letter.last_error
                );
            }
            Ok(())
        }
        DlqAction::Show { id } => {
            let letter = db
                .get_dead_letter(id)
                .await?
                .with_context(|| format!("no dead letter with id `{id}`"))?;
            println!("{}", serde_json::to_string_pretty(&letter)?);
            Ok(())
        }
        DlqAction::Replay { ids, all, filter } => {
            // No workers run in this process: a running gc-status finds the events at its
            // next poll.
            let nobody = tokio::sync::Notify::new();
            let selection = selection(ids, *all, filter)?;
            let n = dead_letters::replay(db, &nobody, CLI_ACTOR, &selection).await?;
            println!("replayed {n} dead letter(s); a running gc-status processes them shortly");
            Ok(())
        }
        DlqAction::Discard {
            ids,
            all,
            filter,
            yes,
        } => {
            let selection = selection(ids, *all, filter)?;
            let count = match &selection {
                Selection::Ids(ids) => ids.len() as i64,
                Selection::Filter(f) => db.list_dead_letters(f, 1, 0).await?.total,
            };
            if count == 0 {
                println!("nothing to discard");
                return Ok(());
            }
            if !yes && !confirm(&format!("Discard {count} dead letter(s) for good? [y/N] "))? {
                println!("nothing discarded");
                return Ok(());
            }
            let n = dead_letters::discard(db, CLI_ACTOR, &selection).await?;
            println!("discarded {n} dead letter(s)");
            Ok(())
        }
    }
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    print!("{question}");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES"))
}
