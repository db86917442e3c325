//! Logging: `tracing` to stdout, filtered by `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // Ignore the error: a test harness may already have installed a subscriber.
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}
