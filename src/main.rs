//! The gc-status server: configuration → telemetry → database (migrated) → serve.

use clap::Parser;
use gc_status::server::{config::Config, startup::Application, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    telemetry::init(config.command.is_none());
    match run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole cause chain on one line: the reason and what to do.
            tracing::error!("gc-status stopped: {err:#}");
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    if let Some(command) = &config.command {
        return gc_status::server::cli::run(&config, command).await;
    }
    let app = Application::build(config).await?;
    tracing::info!(addr = %app.local_addr(), "gc-status listening");
    app.run_until_stopped(gc_status::server::startup::shutdown_signal())
        .await
}
