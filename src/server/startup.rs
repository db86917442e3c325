//! Building and running the application: bind, open the store, serve, shut down cleanly.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{middleware, Router};
use leptos::prelude::*;
use leptos_axum::{generate_route_list, LeptosRoutes};
use tokio::{
    net::TcpListener,
    sync::Notify,
    task::{JoinHandle, JoinSet},
};
use tokio_util::sync::CancellationToken;

use super::{
    admin, api,
    config::Config,
    http, ingest,
    ingest::auth::SenderAuth,
    rates::RateMeter,
    state::AppState,
    status::{StatusFeed, StatusSource},
    store::{self, writer::IngestWriter, Db},
    worker::{interpret::IgnoreList, StatsProcessor, Worker, WorkerSettings},
};
use crate::app::{shell, App};

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

        let (timezone, names) = StatusSource::load_settings(
            &config.worker.timezone,
            config.worker.queue_names_file.as_deref(),
        )?;
        let (db, writer_conn) = store::open(&config.database_url, config.store_timeout()).await?;
        let wake_workers = Arc::new(Notify::new());
        let ingested = Arc::new(RateMeter::default());
        let processed = Arc::new(RateMeter::default());
        let (writer, writer_task) = IngestWriter::spawn(
            writer_conn,
            config.ingest_queue,
            config.max_batch,
            config.store_timeout(),
            db.write_gate(),
            wake_workers.clone(),
            ingested.clone(),
        );
        let worker = Worker::new(
            db.clone(),
            Arc::new(StatsProcessor {
                ignore: IgnoreList::new(config.worker.ignore_topics.iter().cloned()),
            }),
            WorkerSettings::from_config(&config.worker),
            processed.clone(),
        );
        let status = Arc::new(StatusSource {
            db: db.clone(),
            timezone,
            names,
            observation_ttl: Duration::from_secs(config.worker.observation_ttl_secs),
            ingested,
            processed,
        });
        let admin = admin::AdminAccess::new(
            config
                .admin_token
                .as_ref()
                .map(secrecy::ExposeSecret::expose_secret),
            wake_workers.clone(),
        );
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

        let state = AppState {
            leptos_options,
            db: db.clone(),
            writer,
            auth: Arc::new(auth),
            max_body_bytes: config.max_body_bytes,
            admin,
            status: status.clone(),
            feed: feed.clone(),
            metrics: api::metrics_handle(),
            shutdown: shutdown.clone(),
        };
        let router = router(state);
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

    /// The worker, to drive processing by hand (tests, tools).
    pub fn worker(&self) -> Worker {
        self.worker.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting, answers in-flight requests,
    /// commits everything already received and closes the database.
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
        } = self;
        let mut workers: JoinSet<()> = worker.spawn(wake_workers, stop.clone());
        workers.spawn(checkpoint_periodically(db.clone(), stop.clone()));
        workers.spawn(feed.run(status, stop.clone()));
        let stop_on_signal = stop.clone();
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                // Ends live streams and stops workers claiming new events.
                stop_on_signal.cancel();
            })
            .await
            .context("the HTTP server failed");
        stop.cancel();
        while workers.join_next().await.is_some() {}
        served?;
        // The router (and with it every writer handle) is gone: the writer drains and stops.
        match tokio::time::timeout(WRITER_DRAIN_TIMEOUT, writer_task).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::error!(error = %err, "the writer task failed"),
            Err(_) => tracing::error!("the writer did not finish draining in time"),
        }
        db.close().await;
        tracing::info!("gc-status stopped cleanly");
        Ok(())
    }
}

fn router(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let context_state = state.clone();
    let shell_options = state.leptos_options.clone();
    Router::new()
        .merge(ingest::router())
        .merge(http::router())
        .merge(api::router())
        .merge(admin::router(state.clone()))
        .leptos_routes_with_context(
            &state,
            routes,
            move || {
                provide_context(context_state.db.clone());
                provide_context(context_state.status.clone());
                provide_context(context_state.admin.clone());
            },
            move || shell(shell_options.clone()),
        )
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .layer(middleware::from_fn(http::log_request))
        .with_state(state)
}

/// Keeps the WAL short. Connections never checkpoint on commit (see `store::open`), so this
/// is the one place it happens, off every request's path.
async fn checkpoint_periodically(db: Db, stop: CancellationToken) {
    const EVERY: Duration = Duration::from_secs(1);
    loop {
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = stop.cancelled() => return,
        }
        if let Err(err) = db.checkpoint().await {
            tracing::warn!(error = %err, "WAL checkpoint failed; retrying");
        }
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
