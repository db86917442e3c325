//! Logging: `tracing`, filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// `serving`: info-level logs to stdout for the server; CLI commands log only warnings, to
/// stderr, so their output stays readable.
pub fn init(serving: bool) {
    let default = if serving { "info,sqlx=warn" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Ignore the error: a test harness may already have installed a subscriber.
    let _ = if serving {
        tracing_subscriber::fmt().with_env_filter(filter).try_init()
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init()
    };
}
