//! Settings from flags and environment variables (each flag mirrors its variable).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

/// How an HMAC signature header is encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum SignatureEncoding {
    /// Lower- or upper-case hexadecimal (Genesys Open Messaging, most senders).
    #[default]
    Hex,
    /// Standard base64, with or without padding.
    Base64,
}

/// gc-status: durable receiver for Genesys Cloud webhooks with a live queue-status page.
#[derive(Debug, Parser)]
#[command(name = "gc-status", version, about)]
pub struct Config {
    /// Address to listen on (the Leptos convention).
    #[arg(
        long = "addr",
        env = "LEPTOS_SITE_ADDR",
        default_value = "127.0.0.1:3000"
    )]
    pub addr: SocketAddr,

    /// Database URL: `sqlite://PATH` (one instance; the file and its directory are created on
    /// first start) or `postgres://USER:PASSWORD@HOST/DATABASE` (several replicas sharing one
    /// queue; the database must exist, its tables are created on first start).
    #[arg(
        long,
        env = "GC_STATUS_DATABASE_URL",
        default_value = "sqlite://data/gc-status.db"
    )]
    pub database_url: String,

    /// PostgreSQL only: connections this replica opens at most (replicas × this must stay
    /// under the server's `max_connections`).
    #[arg(long, env = "GC_STATUS_DATABASE_POOL", default_value_t = 16)]
    pub database_pool: u32,

    /// Largest webhook body accepted, in bytes; larger bodies get 413.
    #[arg(long, env = "GC_STATUS_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Secrets for HMAC-SHA256 signatures of the raw body, comma-separated (several during a
    /// rotation).
    #[arg(
        long,
        env = "GC_STATUS_HMAC_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub hmac_secrets: Vec<SecretString>,

    /// Header carrying the HMAC signature (an optional `sha256=` prefix is accepted).
    #[arg(long, env = "GC_STATUS_HMAC_HEADER", default_value = "X-GC-Signature")]
    pub hmac_header: String,

    /// Encoding of the HMAC signature.
    #[arg(long, env = "GC_STATUS_HMAC_ENCODING", value_enum, default_value_t)]
    pub hmac_encoding: SignatureEncoding,

    /// Header carrying a static token (EventBridge API destinations, Genesys data actions).
    #[arg(long, env = "GC_STATUS_TOKEN_HEADER", default_value = "X-GC-Token")]
    pub token_header: String,

    /// Accepted static tokens, comma-separated.
    #[arg(
        long,
        env = "GC_STATUS_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub tokens: Vec<SecretString>,

    /// Accepted HTTP Basic credentials, comma-separated `user:password` pairs.
    #[arg(
        long,
        env = "GC_STATUS_BASIC_USERS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub basic_users: Vec<SecretString>,

    /// The admin secret: admin sign-in at /login, and the bearer token of the admin API.
    #[arg(long, env = "GC_STATUS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<SecretString>,

    /// Accept webhooks without any authentication. For local trials only: anyone who can reach
    /// the port can then write events.
    #[arg(
        long,
        env = "GC_STATUS_INSECURE_ACCEPT_UNSIGNED",
        default_value_t = false
    )]
    pub insecure_accept_unsigned: bool,

    /// Longest a webhook waits for its commit before it is answered 503 (milliseconds).
    #[arg(long, env = "GC_STATUS_STORE_TIMEOUT_MS", default_value_t = 2000)]
    pub store_timeout_ms: u64,

    /// Webhooks that may wait for the writer at once; beyond that they get 503 at once.
    #[arg(long, env = "GC_STATUS_INGEST_QUEUE", default_value_t = 8192)]
    pub ingest_queue: usize,

    /// Payload bytes that may wait for the writer at once (bounds its memory); beyond that
    /// webhooks get 503 at once.
    #[arg(long, env = "GC_STATUS_INGEST_QUEUE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub ingest_queue_bytes: usize,

    /// Most webhooks committed in one transaction.
    #[arg(long, env = "GC_STATUS_MAX_BATCH", default_value_t = 1024)]
    pub max_batch: usize,

    /// Largest the database may grow (MiB); past it webhooks get 503 (as on a full disk)
    /// until retention or an admin frees space. Unset: limited by the disk only.
    #[arg(long, env = "GC_STATUS_MAX_DATABASE_MB")]
    pub max_database_mb: Option<u64>,

    /// SQLite: largest the write-ahead log may grow under steady traffic (MiB). It is restarted
    /// between two commits once past a quarter of this; `/readyz` reports it if it still grows
    /// past the bound (a reader holding an old snapshot, a failing checkpoint).
    #[arg(
        long,
        env = "GC_STATUS_WAL_LIMIT_MB",
        default_value_t = crate::server::store::WalLimit::DEFAULT_MB,
        value_parser = clap::value_parser!(u64).range(4..=1_048_576)
    )]
    pub wal_limit_mb: u64,

    /// Longest a client may take to send a request's head, and then its body (seconds);
    /// slower requests are cut off (a slow body with 408).
    #[arg(
        long,
        env = "GC_STATUS_REQUEST_READ_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub request_read_timeout_secs: u64,

    /// Webhook requests handled at once; more get 503 at once (the sender retries).
    #[arg(long, env = "GC_STATUS_MAX_WEBHOOKS_IN_FLIGHT", default_value_t = 1024)]
    pub max_webhooks_in_flight: usize,

    /// Page, API and stream requests handled at once; more get 503, so readers can never
    /// starve webhooks of the server (nor webhooks the readers).
    #[arg(long, env = "GC_STATUS_MAX_READS_IN_FLIGHT", default_value_t = 512)]
    pub max_reads_in_flight: usize,

    /// Longest any request but the status stream may take in all, body and answer included
    /// (seconds); slower ones get 408.
    #[arg(long, env = "GC_STATUS_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,

    /// Open connections at most; past it new ones are closed at once (and counted in
    /// `/metrics`). Keep it under the process's open-file limit (`LimitNOFILE`, 65536 in the
    /// shipped unit) so the database and logs always have descriptors left.
    #[arg(long, env = "GC_STATUS_MAX_CONNECTIONS", default_value_t = 16_384)]
    pub max_connections: usize,

    /// Open connections from one address at most (trusted proxies are exempt).
    #[arg(
        long,
        env = "GC_STATUS_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 1024
    )]
    pub max_connections_per_address: usize,

    /// Status streams (`/api/v2/stream`) open at once from one client address.
    #[arg(long, env = "GC_STATUS_MAX_STREAMS_PER_ADDRESS", default_value_t = 32)]
    pub max_streams_per_address: usize,

    /// A status stream ends after this long (seconds) and the page reconnects by itself, so a
    /// stream never outlives what its session allowed.
    #[arg(long, env = "GC_STATUS_STREAM_MAX_SECS", default_value_t = 3600)]
    pub stream_max_secs: u64,

    /// How often an open status stream checks that its session still exists (seconds): a
    /// revoked session's wallboard stops within this.
    #[arg(
        long,
        env = "GC_STATUS_STREAM_SESSION_CHECK_SECS",
        default_value_t = 30,
        hide = true
    )]
    pub stream_session_check_secs: u64,

    /// Reverse proxies whose `X-Forwarded-For` is believed, comma-separated addresses or
    /// ranges (e.g. 10.0.0.5,10.1.0.0/16). Unset: none; the client is the TCP peer.
    #[arg(long, env = "GC_STATUS_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    /// Audit-trail rows are kept this long (days).
    #[arg(long, env = "GC_STATUS_AUDIT_RETENTION_DAYS", default_value_t = 90)]
    pub audit_retention_days: u64,

    /// How long one status snapshot serves every reader (page, queues API, metrics, streams)
    /// before the next database read (milliseconds).
    #[arg(long, env = "GC_STATUS_STATUS_CACHE_MS", default_value_t = 500)]
    pub status_cache_ms: u64,

    /// Secret that viewing the dashboard and widget needs (as a `?token=` link, exchanged
    /// for a session cookie). Unset: anyone who can reach the portal may view it.
    #[arg(long, env = "GC_STATUS_VIEWER_TOKEN", hide_env_values = true)]
    pub viewer_token: Option<SecretString>,

    /// The URL people reach the portal at, e.g. https://status.example.com. With https,
    /// session cookies are `Secure` and `__Host-` prefixed; its origin is also accepted by the
    /// cross-site check behind a proxy that rewrites `Host`.
    #[arg(long, env = "GC_STATUS_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// A signed-in session ends after this long without a request (minutes).
    #[arg(long, env = "GC_STATUS_SESSION_IDLE_MINUTES", default_value_t = 30)]
    pub session_idle_minutes: u64,

    /// A signed-in session ends this long after sign-in, active or not (hours).
    #[arg(long, env = "GC_STATUS_SESSION_MAX_HOURS", default_value_t = 12)]
    pub session_max_hours: u64,

    /// Portal origins allowed to frame `/widget`, comma-separated (e.g.
    /// https://portal.example.com). No other page may be framed.
    #[arg(long, env = "GC_STATUS_FRAME_ANCESTORS", value_delimiter = ',')]
    pub frame_ancestors: Vec<String>,

    /// Warning: the wallboard flags a queue with more conversations waiting than this.
    #[arg(long, env = "GC_STATUS_ALERT_WAITING")]
    pub alert_waiting: Option<i64>,

    /// Warning: a queue whose longest current wait exceeds this (seconds).
    #[arg(long, env = "GC_STATUS_ALERT_LONGEST_WAIT_SECS")]
    pub alert_longest_wait_secs: Option<i64>,

    /// Warning: a queue whose service level today is below this (percent).
    #[arg(long, env = "GC_STATUS_ALERT_SERVICE_LEVEL")]
    pub alert_service_level: Option<f64>,

    /// Critical: more conversations waiting than this.
    #[arg(long, env = "GC_STATUS_CRITICAL_WAITING")]
    pub critical_waiting: Option<i64>,

    /// Critical: a longest current wait over this (seconds).
    #[arg(long, env = "GC_STATUS_CRITICAL_LONGEST_WAIT_SECS")]
    pub critical_longest_wait_secs: Option<i64>,

    /// Critical: a service level today below this (percent).
    #[arg(long, env = "GC_STATUS_CRITICAL_SERVICE_LEVEL")]
    pub critical_service_level: Option<f64>,

    /// No event for this long marks the dashboard's data stale (seconds).
    #[arg(long, env = "GC_STATUS_STALE_AFTER_SECS", default_value_t = 300)]
    pub stale_after_secs: u64,

    #[command(flatten)]
    pub worker: WorkerConfig,

    #[command(flatten)]
    pub forward: ForwardConfig,

    #[command(flatten)]
    pub genesys: GenesysConfig,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Background processing settings.
#[derive(Debug, Clone, Args)]
pub struct WorkerConfig {
    /// Concurrent worker tasks claiming events (0 disables processing).
    #[arg(long, env = "GC_STATUS_WORKERS", default_value_t = 2)]
    pub workers: usize,

    /// Attempts before an event moves to the dead letters.
    #[arg(long, env = "GC_STATUS_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,

    /// Base of the exponential retry backoff (milliseconds).
    #[arg(long, env = "GC_STATUS_RETRY_BASE_MS", default_value_t = 1000)]
    pub retry_base_ms: u64,

    /// Longest retry backoff (milliseconds).
    #[arg(long, env = "GC_STATUS_RETRY_CAP_MS", default_value_t = 300_000)]
    pub retry_cap_ms: u64,

    /// How long a claimed event stays leased before another worker may take it (seconds).
    #[arg(long, env = "GC_STATUS_LEASE_SECS", default_value_t = 30)]
    pub lease_secs: u64,

    /// Events claimed per batch.
    #[arg(long, env = "GC_STATUS_WORKER_BATCH", default_value_t = 200)]
    pub worker_batch: usize,

    /// Age after which done events are pruned (days).
    #[arg(long, env = "GC_STATUS_RETENTION_DAYS", default_value_t = 7)]
    pub retention_days: u64,

    /// Event types/topics marked done without processing, comma-separated; `prefix*` allowed.
    #[arg(long, env = "GC_STATUS_IGNORE_TOPICS", value_delimiter = ',')]
    pub ignore_topics: Vec<String>,

    /// Time zone that decides what "today" is (IANA name).
    #[arg(long, env = "GC_STATUS_TIMEZONE", default_value = "UTC")]
    pub timezone: String,

    /// JSON file of per-queue settings by queue id: a name, or `{"name", "service_level":
    /// {"seconds", "percent"}, "thresholds": {"warning": {…}, "critical": {…}}}`. Re-read on
    /// SIGHUP.
    #[arg(long, env = "GC_STATUS_QUEUES_FILE")]
    pub queues_file: Option<PathBuf>,

    /// The older names-only file (`{"queue-id": "Sales"}`), read when no queues file is set.
    #[arg(long, env = "GC_STATUS_QUEUE_NAMES_FILE")]
    pub queue_names_file: Option<PathBuf>,

    /// Service-level target: answered within this many seconds (per queue in the queues file).
    #[arg(long, env = "GC_STATUS_SERVICE_LEVEL_SECS", default_value_t = 20)]
    pub service_level_secs: u32,

    /// Service-level target percentage (per queue in the queues file).
    #[arg(long, env = "GC_STATUS_SERVICE_LEVEL_PERCENT", default_value_t = 80.0)]
    pub service_level_percent: f64,

    /// Abandons within this many seconds of queueing are short: left out of the abandon rate
    /// and the service level. 0: off.
    #[arg(long, env = "GC_STATUS_SHORT_ABANDON_SECS", default_value_t = 0)]
    pub short_abandon_secs: u32,

    /// How long a queue observation stays authoritative (seconds).
    #[arg(long, env = "GC_STATUS_OBSERVATION_TTL_SECS", default_value_t = 300)]
    pub observation_ttl_secs: u64,

    /// How far an event's own time may lie after its receipt (seconds); later times are a
    /// wrong sender clock and the event is dead-lettered with that reason.
    #[arg(long, env = "GC_STATUS_MAX_CLOCK_SKEW_SECS", default_value_t = 300)]
    pub max_clock_skew_secs: u64,

    /// A conversation waiting longer than this (seconds) lost its end event: it stops counting
    /// as waiting and is pruned, so "longest wait" cannot grow forever.
    #[arg(long, env = "GC_STATUS_MAX_WAITING_SECS", default_value_t = 4 * 3600)]
    pub max_waiting_secs: u64,

    /// Fault injection for the crash-loop tests: processing an event of exactly this type
    /// hangs its worker forever, as a poison event would. Never set it in production.
    #[arg(long, env = "GC_STATUS_FAULT_HANG_ON_TYPE", hide = true)]
    pub fault_hang_on_type: Option<String>,
}

impl WorkerConfig {
    /// How events are interpreted.
    pub fn rules(&self) -> crate::server::domain::interpret::Rules {
        crate::server::domain::interpret::Rules {
            ignore: crate::server::domain::interpret::IgnoreList::new(
                self.ignore_topics.iter().cloned(),
            ),
            max_clock_skew_ms: i64::try_from(self.max_clock_skew_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
        }
    }

    /// [`Self::max_waiting_secs`] in milliseconds.
    pub fn max_waiting_ms(&self) -> i64 {
        i64::try_from(self.max_waiting_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

/// How gc-status authenticates to the OAuth2 token endpoint with its client id and secret.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OAuthClientAuth {
    /// HTTP Basic (`client_secret_basic`, the OAuth2 default).
    #[default]
    Basic,
    /// In the form body (`client_secret_post`).
    Body,
}

/// Forwarding every processed event to a downstream sink (optional).
#[derive(Debug, Clone, Args)]
pub struct ForwardConfig {
    /// Where processed events are POSTed as JSON records. Unset: nothing is forwarded.
    #[arg(long, env = "GC_STATUS_SINK_URL")]
    pub sink_url: Option<String>,

    /// Longest one delivery to the sink may take (milliseconds); longer is a transient failure.
    #[arg(long, env = "GC_STATUS_SINK_TIMEOUT_MS", default_value_t = 10_000)]
    pub sink_timeout_ms: u64,

    /// Deliveries sent to the sink at once.
    #[arg(long, env = "GC_STATUS_SINK_CONCURRENCY", default_value_t = 16)]
    pub sink_concurrency: usize,

    /// Consecutive transient failures after which forwarding pauses (the sink is down).
    #[arg(long, env = "GC_STATUS_SINK_PAUSE_AFTER", default_value_t = 10)]
    pub sink_pause_after: u32,

    /// How long forwarding pauses before it tries one event again (seconds).
    #[arg(long, env = "GC_STATUS_SINK_COOLDOWN_SECS", default_value_t = 30)]
    pub sink_cooldown_secs: u64,

    /// OAuth2 token endpoint (client-credentials grant). Unset: the sink is called without a
    /// token.
    #[arg(long, env = "GC_STATUS_OAUTH_TOKEN_URL")]
    pub oauth_token_url: Option<String>,

    /// The client id gc-status has at the token endpoint.
    #[arg(long, env = "GC_STATUS_OAUTH_CLIENT_ID")]
    pub oauth_client_id: Option<String>,

    /// The client secret (never logged or shown).
    #[arg(long, env = "GC_STATUS_OAUTH_CLIENT_SECRET", hide_env_values = true)]
    pub oauth_client_secret: Option<SecretString>,

    /// Scopes to ask for, separated by spaces or commas.
    #[arg(long, env = "GC_STATUS_OAUTH_SCOPE")]
    pub oauth_scope: Option<String>,

    /// The `audience` parameter some providers require (Auth0, Okta custom servers).
    #[arg(long, env = "GC_STATUS_OAUTH_AUDIENCE")]
    pub oauth_audience: Option<String>,

    /// How the client id and secret are sent to the token endpoint.
    #[arg(long, env = "GC_STATUS_OAUTH_CLIENT_AUTH", value_enum, default_value_t)]
    pub oauth_client_auth: OAuthClientAuth,

    /// A token is renewed this long before it expires (seconds).
    #[arg(
        long,
        env = "GC_STATUS_OAUTH_REFRESH_MARGIN_SECS",
        default_value_t = 60
    )]
    pub oauth_refresh_margin_secs: u64,
}

/// The Genesys Cloud connector: gc-status calls Genesys's Platform API itself with an OAuth
/// client (client credentials). Unset environment: no connector.
#[derive(Debug, Clone, Args)]
pub struct GenesysConfig {
    /// The org's Genesys Cloud environment (`mypurecloud.com`, `mypurecloud.ie`,
    /// `usw2.pure.cloud`, …): the API is `https://api.<env>`, tokens come from
    /// `https://login.<env>/oauth/token`.
    #[arg(long, env = "GC_STATUS_GENESYS_ENVIRONMENT")]
    pub genesys_environment: Option<String>,

    /// The Platform API's base URL instead of `https://api.<env>` (a proxy, a local test server).
    #[arg(long, env = "GC_STATUS_GENESYS_API_URL")]
    pub genesys_api_url: Option<String>,

    /// The login service's base URL instead of `https://login.<env>`.
    #[arg(long, env = "GC_STATUS_GENESYS_LOGIN_URL")]
    pub genesys_login_url: Option<String>,

    /// The OAuth client's id (a client-credentials grant).
    #[arg(long, env = "GC_STATUS_GENESYS_CLIENT_ID")]
    pub genesys_client_id: Option<String>,

    /// The OAuth client's secret (never logged or shown).
    #[arg(long, env = "GC_STATUS_GENESYS_CLIENT_SECRET", hide_env_values = true)]
    pub genesys_client_secret: Option<SecretString>,

    /// Which queues to watch, by id or name, `prefix*` for many, separated by commas. Default:
    /// every queue the client may see.
    #[arg(long, env = "GC_STATUS_GENESYS_QUEUES", value_delimiter = ',')]
    pub genesys_queues: Vec<String>,

    /// How often the live observations are polled (seconds).
    #[arg(long, env = "GC_STATUS_GENESYS_POLL_SECS", default_value_t = 10)]
    pub genesys_poll_secs: u64,

    /// Whether observations are also pushed over a notifications websocket.
    #[arg(
        long,
        env = "GC_STATUS_GENESYS_NOTIFICATIONS",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub genesys_notifications: bool,

    /// How often today's figures are asked for again (seconds; also after any gap in the
    /// live feed).
    #[arg(long, env = "GC_STATUS_GENESYS_AGGREGATES_SECS", default_value_t = 300)]
    pub genesys_aggregates_secs: u64,

    /// How often the queue list (names, service-level targets) is read again (seconds).
    #[arg(
        long,
        env = "GC_STATUS_GENESYS_QUEUES_REFRESH_SECS",
        default_value_t = 600
    )]
    pub genesys_queues_refresh_secs: u64,

    /// A notifications websocket silent this long (Genesys sends a heartbeat every 30 s) is
    /// taken for dead and replaced (seconds).
    #[arg(
        long,
        env = "GC_STATUS_GENESYS_HEARTBEAT_TIMEOUT_SECS",
        default_value_t = 60
    )]
    pub genesys_heartbeat_timeout_secs: u64,
}

impl ForwardConfig {
    /// The sink's URL, when forwarding is configured (an empty value counts as unset).
    pub fn sink(&self) -> Option<&str> {
        self.sink_url.as_deref().filter(|u| !u.is_empty())
    }
}

/// Operator commands; without one, gc-status serves.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Inspect, replay or discard dead letters.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// List or end portal sign-in sessions.
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
    },
    /// Recompute all queue statistics from the stored events.
    RebuildStats,
    /// Queue events processed before a sink was configured, so the sink receives them too
    /// (the running server forwards them; each is delivered once).
    Forward {
        /// Events received at or after this time (RFC 3339).
        #[arg(long)]
        since: String,
        /// Events received before this time (RFC 3339); default: now.
        #[arg(long)]
        until: Option<String>,
    },
    /// Copy this SQLite database (GC_STATUS_DATABASE_URL) into an empty PostgreSQL database,
    /// to run several replicas on it. Stop gc-status first; the copy is all or nothing.
    CopyToPostgres {
        /// The PostgreSQL database to copy into (postgres://user:password@host/database);
        /// its tables are created if missing, and it must hold no events yet.
        #[arg(long, env = "GC_STATUS_COPY_TO")]
        to: String,
    },
}

/// `gc-status sessions …`.
#[derive(Debug, Clone, Subcommand)]
pub enum SessionsAction {
    /// How many sessions are signed in, by role.
    List,
    /// End sessions at once: their next request needs a new sign-in and their status streams
    /// close within half a minute.
    Revoke {
        /// End every session.
        #[arg(long, conflicts_with = "role")]
        all: bool,
        /// End only the sessions of this role.
        #[arg(long, value_parser = ["admin", "viewer"])]
        role: Option<String>,
    },
}

/// Which dead letters a CLI command applies to.
#[derive(Debug, Clone, Args, Default)]
pub struct DlqFilterArgs {
    /// Only this event type / topic.
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Only this queue id.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only letters whose errors contain this text.
    #[arg(long)]
    pub error: Option<String>,
    /// Dead-lettered at or after (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Dead-lettered before (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Only letters of this step: `payload` (processing failed) or `sink` (forwarding failed).
    #[arg(long)]
    pub stage: Option<String>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum DlqAction {
    /// List dead letters, newest first.
    List {
        #[command(flatten)]
        filter: DlqFilterArgs,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long, default_value_t = 0)]
        offset: i64,
    },
    /// Show one dead letter with its payload and every error.
    Show { id: String },
    /// Put dead letters back to be processed again (by id, or all matching with --all).
    Replay {
        ids: Vec<String>,
        /// Replay every dead letter matching the filter.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: DlqFilterArgs,
    },
    /// Delete dead letters for good (by id, or all matching with --all); asks first.
    Discard {
        ids: Vec<String>,
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: DlqFilterArgs,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
}

impl Config {
    /// The bound on waiting for a commit; also the writer's SQLite busy timeout.
    pub fn store_timeout(&self) -> Duration {
        Duration::from_millis(self.store_timeout_ms)
    }

    /// A configuration for tests and benchmarks: defaults, with the given database and port 0.
    pub fn for_database(database_url: impl Into<String>) -> Self {
        let mut config = Config::parse_from(["gc-status"]);
        config.addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.database_url = database_url.into();
        config
    }
}
