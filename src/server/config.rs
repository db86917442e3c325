//! Settings from flags and environment variables (each flag mirrors its variable).

use std::{net::SocketAddr, time::Duration};

use clap::{Parser, ValueEnum};
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

    /// SQLite database URL; the file and its directory are created on first start.
    #[arg(
        long,
        env = "GC_STATUS_DATABASE_URL",
        default_value = "sqlite://data/gc-status.db"
    )]
    pub database_url: String,

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

    /// Bearer token for the admin API and replay buttons.
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

    /// Most webhooks committed in one transaction.
    #[arg(long, env = "GC_STATUS_MAX_BATCH", default_value_t = 1024)]
    pub max_batch: usize,
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
