//! Building and running the application: bind, open the store, serve, shut down cleanly.

use std::{collections::HashMap, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::Router;
use futures_util::future::BoxFuture;
use leptos::prelude::*;
use tokio::{
    net::TcpListener,
    sync::Notify,
    task::{JoinHandle, JoinSet},
};
use tokio_util::sync::CancellationToken;

use super::{
    admin, api,
    client::TrustedProxies,
    config::Config,
    forward::{self, Forwarder},
    genesys::{lookup::DetailsLookup, Connector, GenesysSettings},
    guard::SignInGuard,
    health::Health,
    http::{self, serve, state::AppState, ServeSettings},
    ingest::{auth::SenderAuth, Webhooks},
    limits::Limits,
    portal::{sessions, Portal},
    rates::RateMeter,
    status::{self, StatusFeed, StatusSource},
    store::{
        self,
        writer::{IngestWriter, InlineSettings, WriterSettings},
        Backend, Db,
    },
    worker::{self, HangingProcessor, Processor, StatsProcessor, Worker, WorkerSettings},
};

/// How long shutdown waits for the writer to commit what it already received.
const WRITER_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A bound, ready-to-serve gc-status.
pub struct Application {
    listener: TcpListener,
    router: Router,
    db: Db,
    writer_task: JoinHandle<()>,
    worker: Worker,
    wake_workers: Arc<Notify>,
    feed: StatusFeed,
    status: Arc<StatusSource>,
    shutdown: CancellationToken,
    health: Health,
    extra_tasks: Vec<(&'static str, BoxFuture<'static, ()>)>,
    serve_settings: ServeSettings,
    audit_retention: Duration,
    forwarder: Option<Forwarder>,
    maintenance: Vec<store::Maintenance>,
}

impl Application {
    /// Validates the configuration, opens and migrates the database, binds the listener.
    /// Fails with a message that says what to fix.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let auth = SenderAuth::from_config(&config)?;
        if auth.accepts_unsigned() {
            tracing::warn!(
                "--insecure-accept-unsigned: webhooks are accepted WITHOUT authentication; \
                 anyone who can reach this port can write events. Use only for local trials."
            );
        } else {
            tracing::info!(modes = ?auth.modes(), "webhook sender authentication enabled");
        }

        let portal = Arc::new(Portal::from_config(&config)?);
        let (timezone, queue_settings) = StatusSource::load_settings(&config)?;
        let (db, writer_conn) = store::open_with(
            &config.database_url,
            &store::OpenOptions {
                busy_timeout: config.store_timeout(),
                max_bytes: config
                    .max_database_mb
                    .map(|mb| mb.saturating_mul(1024 * 1024)),
                pool_size: config.database_pool,
                wal_limit: store::WalLimit::from_mb(config.wal_limit_mb),
            },
        )
        .await?;
        // Events are queued for the sink in the transaction that marks them done.
        let db = db.with_forwarding(config.forward.sink().is_some());
        let forwarder = forward::from_config(&db, &config, Default::default())?;
        let wake_workers = Arc::new(Notify::new());
        let ingested = Arc::new(RateMeter::default());
        let processed = Arc::new(RateMeter::default());
        let health = Health::default();
        let maintenance = db.maintenance_tasks(health.clone()).await?;
        let processor = processor(&config);
        // Processing as events arrive spares the workers (and the write lock) a claim and a
        // completion per event; it needs workers on (they handle retries and crashes).
        let inline = (config.worker.workers > 0 && processor.inline()).then(|| processor.clone());
        let backoff = WorkerSettings::from_config(&config.worker).backoff;
        // PostgreSQL applies the verdicts beside the writer (see `worker::inline`).
        let (apart, applier) = match (&inline, db.backend()) {
            (Some(_), Backend::Postgres) => {
                let (tx, rx) = worker::inline::channel();
                (Some(tx), Some(rx))
            }
            _ => (None, None),
        };
        let inline_settings = inline.is_some().then(|| InlineSettings {
            forwarding: db.forwarding(),
            first_retry: Box::new(move |now| backoff.retry_at(now, 1)),
            processed: processed.clone(),
            apart,
        });
        let (writer, writer_task) = IngestWriter::spawn(
            writer_conn,
            WriterSettings {
                queue_capacity: config.ingest_queue,
                queue_bytes: config.ingest_queue_bytes,
                max_batch: config.max_batch,
                timeout: config.store_timeout(),
                gate: db.write_gate(),
                committed: wake_workers.clone(),
                ingested: ingested.clone(),
                inline: inline_settings,
                health: health.clone(),
                file: store::database_file(&config.database_url),
            },
        );
        let genesys = GenesysSettings::from_config(
            &config.genesys,
            Duration::from_secs(config.worker.observation_ttl_secs),
        )?;
        let mut worker = Worker::new(
            db.clone(),
            processor,
            WorkerSettings::from_config(&config.worker),
            processed.clone(),
        );
        let webhooks = Arc::new(Webhooks {
            auth,
            writer,
            max_body_bytes: config.max_body_bytes,
            body_timeout: Limits::from_config(&config).body_timeout,
            inline,
            db: db.clone(),
        });
        // The connector is one more sender into the same pipeline as the webhooks.
        let connector = match genesys {
            Some(settings) => {
                tracing::info!(
                    api = %settings.api_url,
                    notifications = settings.notifications,
                    poll_secs = settings.poll.as_secs(),
                    "Genesys Cloud connector on"
                );
                let connector = Connector::new(
                    db.clone(),
                    settings,
                    webhooks.clone(),
                    queue_settings.clone(),
                    timezone.clone(),
                    health.clone(),
                )?;
                worker = worker.with_lookup(Arc::new(DetailsLookup(connector.api())));
                Some(connector)
            }
            None => None,
        };
        let status = Arc::new(StatusSource {
            db: db.clone(),
            timezone,
            settings: queue_settings.clone(),
            observation_ttl: Duration::from_secs(config.worker.observation_ttl_secs),
            max_waiting: Duration::from_secs(config.worker.max_waiting_secs),
            ingested,
            processed: processed.clone(),
            replica: status::replica_name(),
            cache_for: Duration::from_millis(config.status_cache_ms),
            cache: Default::default(),
            board: portal.board.clone(),
            forwarding: forwarder.as_ref().map(Forwarder::monitor),
            genesys: connector.as_ref().map(Connector::monitor),
        });
        let guard = SignInGuard::default();
        let admin = admin::AdminAccess::new(
            config
                .admin_token
                .as_ref()
                .map(secrecy::ExposeSecret::expose_secret),
            wake_workers.clone(),
            guard.clone(),
        );
        let proxies = Arc::new(TrustedProxies::parse(&config.trusted_proxies)?);
        if !admin.enabled() {
            tracing::info!("GC_STATUS_ADMIN_TOKEN is not set: admin operations are disabled");
        }
        let shutdown = CancellationToken::new();
        let feed = StatusFeed::default();

        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("cannot listen on {} (LEPTOS_SITE_ADDR)", config.addr))?;

        let mut leptos_options = get_configuration(None)
            .context("cannot read the Leptos configuration")?
            .leptos_options;
        leptos_options.site_addr = listener.local_addr()?;

        let limits = Limits::from_config(&config);
        let state = AppState {
            leptos_options,
            db: db.clone(),
            webhooks,
            admin,
            guard,
            status: status.clone(),
            feed: feed.clone(),
            metrics: api::metrics_handle(),
            shutdown: shutdown.clone(),
            health: health.clone(),
            limits,
            portal,
            proxies: proxies.clone(),
        };
        let router = http::router(state);
        let mut extra_tasks: Vec<(&'static str, BoxFuture<'static, ()>)> = Vec::new();
        if let Some(connector) = connector {
            extra_tasks.push((
                "genesys connector",
                Box::pin(connector.run(shutdown.clone())),
            ));
        }
        if let Some(rx) = applier {
            extra_tasks.push((
                "inline applier",
                Box::pin(worker::inline::run(
                    db.clone(),
                    rx,
                    backoff,
                    processed.clone(),
                    wake_workers.clone(),
                    shutdown.clone(),
                )),
            ));
        }
        Ok(Application {
            listener,
            router,
            db,
            writer_task,
            worker,
            wake_workers,
            feed,
            status,
            shutdown,
            health,
            extra_tasks,
            serve_settings: ServeSettings::from_config(&config, proxies),
            audit_retention: Duration::from_secs(config.audit_retention_days.max(1) * 86_400),
            forwarder,
            maintenance,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn db(&self) -> Db {
        self.db.clone()
    }

    /// The forwarder, when a sink is configured (tests, tools).
    pub fn forwarder(&self) -> Option<Forwarder> {
        self.forwarder.clone()
    }

    /// The worker, to drive processing by hand (tests, tools).
    pub fn worker(&self) -> Worker {
        self.worker.clone()
    }

    /// Adds a background task to run (and supervise) beside the built-in ones: if it ends
    /// before shutdown, the process stops with an error, as for any of gc-status's own tasks.
    pub fn supervise(
        &mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        self.extra_tasks.push((name, Box::pin(task)));
    }

    /// Stops the writer task as a crash would (tests of supervision).
    #[doc(hidden)]
    pub fn crash_writer(&self) {
        self.writer_task.abort();
    }

    /// Serves until `shutdown` resolves, then stops accepting, answers in-flight requests,
    /// commits everything already received and closes the database.
    ///
    /// Every background task is supervised: if one ends or panics before shutdown, `/readyz`
    /// says which and why, the server shuts down as on SIGTERM (committing what it can) and
    /// this returns an error, so the process exits non-zero and its service manager restarts
    /// it. A process whose writer died never stays up answering every webhook with 503.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            listener,
            router,
            db,
            writer_task,
            worker,
            wake_workers,
            feed,
            status,
            shutdown: stop,
            health,
            extra_tasks,
            serve_settings,
            forwarder,
            maintenance,
            audit_retention,
        } = self;
        let mut tasks = Supervised::default();
        // Other replicas' commits wake this one's workers too (PostgreSQL).
        let (listening, wake, until) = (db.clone(), wake_workers.clone(), stop.clone());
        tasks.spawn("work notifications", async move {
            listening.listen_for_work(wake, until).await
        });
        let workers = worker.spawn(wake_workers, stop.clone());
        if !workers.is_empty() {
            tasks.adopt("worker", workers);
        }
        for task in maintenance {
            tasks.spawn(task.name, (task.run)(stop.clone()));
        }
        tasks.spawn("status feed", feed.run(status.clone(), stop.clone()));
        tasks.spawn(
            "queue settings reload",
            status.settings.clone().reload_on_hangup(stop.clone()),
        );
        tasks.spawn("queue sampler", status.sample_periodically(stop.clone()));
        tasks.spawn(
            "session pruning",
            sessions::prune_periodically(db.clone(), audit_retention, stop.clone()),
        );
        if let Some(forwarder) = forwarder {
            tasks.spawn("forwarder", forwarder.run(stop.clone()));
        }
        for (name, task) in extra_tasks {
            tasks.spawn(name, task);
        }
        let mut writer_task = Some(writer_task);

        let stop_on_signal = stop.clone();
        let serving = tokio::spawn(serve(listener, router, serve_settings, async move {
            tokio::select! {
                // The signal cancels `stop` first, so the tasks' ends that follow (the writer
                // stops once the router is gone) are not taken for failures.
                () = shutdown => stop_on_signal.cancel(),
                () = stop_on_signal.cancelled() => {}
            }
        }));
        // Watch the tasks until shutdown begins (by signal or by a failure).
        let failure = tokio::select! {
            biased;
            () = stop.cancelled() => None,
            failure = tasks.first_failure(&mut writer_task) => Some(failure),
        };
        if let Some((part, cause)) = &failure {
            tracing::error!(
                part,
                cause,
                "a background task stopped; shutting down to be restarted"
            );
            health.fail(part, cause.clone());
        }
        // Ends live streams, stops workers claiming and the server accepting.
        stop.cancel();
        let served = match serving.await {
            Ok(result) => result,
            Err(err) => Err(anyhow::anyhow!("the HTTP server task failed: {err}")),
        };
        tasks.finish().await;
        // The router (and with it every writer handle) is gone: the writer drains and stops.
        if let Some(writer_task) = writer_task {
            match tokio::time::timeout(WRITER_DRAIN_TIMEOUT, writer_task).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!(error = %err, "the writer task failed"),
                Err(_) => tracing::error!("the writer did not finish draining in time"),
            }
        }
        db.close().await;
        served?;
        if let Some((part, cause)) = failure {
            anyhow::bail!(
                "{part} stopped unexpectedly ({cause}); gc-status exits so that it is restarted"
            );
        }
        tracing::info!("gc-status stopped cleanly");
        Ok(())
    }
}

/// Background tasks by name, to tell which one stopped.
#[derive(Default)]
struct Supervised {
    set: JoinSet<()>,
    names: HashMap<tokio::task::Id, &'static str>,
}

impl Supervised {
    fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), name);
    }

    fn adopt(&mut self, name: &'static str, mut tasks: JoinSet<()>) {
        self.spawn(name, async move {
            // One supervised task for the group: it ends (unexpectedly) when any member does.
            if let Some(ended) = tasks.join_next().await {
                if let Err(err) = ended {
                    if err.is_panic() {
                        std::panic::resume_unwind(err.into_panic());
                    }
                }
                // The others keep going until shutdown; wait for them so leases are released.
                while tasks.join_next().await.is_some() {}
            }
        });
    }

    /// Resolves with the name and cause of the first task (or the writer) to stop.
    async fn first_failure(
        &mut self,
        writer: &mut Option<JoinHandle<()>>,
    ) -> (&'static str, String) {
        let writer_ended = async {
            match writer.as_mut() {
                Some(task) => task.await,
                None => std::future::pending().await,
            }
        };
        let ended = tokio::select! {
            Some(joined) = self.set.join_next_with_id() => Ok(joined),
            ended = writer_ended => Err(ended),
        };
        match ended {
            Ok(joined) => {
                let (id, cause) = match joined {
                    Ok((id, ())) => (id, "ended unexpectedly".to_owned()),
                    Err(err) => (err.id(), describe(err)),
                };
                (
                    self.names.get(&id).copied().unwrap_or("a background task"),
                    cause,
                )
            }
            Err(ended) => {
                *writer = None;
                let cause = match ended {
                    Ok(()) => "ended unexpectedly".to_owned(),
                    Err(err) => describe(err),
                };
                ("writer", cause)
            }
        }
    }

    /// Waits for every task to end (they stop on the cancelled token).
    async fn finish(mut self) {
        while let Some(joined) = self.set.join_next_with_id().await {
            if let Err(err) = joined {
                let name = self
                    .names
                    .get(&err.id())
                    .copied()
                    .unwrap_or("a background task");
                tracing::error!(task = name, "{}", describe(err));
            }
        }
    }
}

/// A task's end as text: its panic message, or that it was cancelled.
fn describe(err: tokio::task::JoinError) -> String {
    if err.is_panic() {
        format!("panicked: {}", worker::panic_message(&*err.into_panic()))
    } else {
        "was cancelled".to_owned()
    }
}

/// The event processor, with the fault injection of the crash-loop tests when asked for.
fn processor(config: &Config) -> Arc<dyn Processor> {
    let stats = StatsProcessor {
        rules: config.worker.rules(),
    };
    match &config.worker.fault_hang_on_type {
        Some(event_type) => {
            tracing::warn!(%event_type, "fault injection: workers hang on this event type");
            Arc::new(HangingProcessor {
                inner: stats,
                hang_on_type: event_type.clone(),
            })
        }
        None => Arc::new(stats),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
}
