//! The command line: one binary, roles by subcommand.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::{App, Config, Role, app, http, telemetry};

#[derive(Debug, Parser)]
#[command(name = "cognie-sync", version, about = "Keeps Cognie flashcards in step with Notion notes")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// HTTP API and workers in one process (the default).
    Serve,
    /// HTTP API only.
    Api,
    /// Step workers only (run as many as you like against one PostgreSQL).
    Worker,
    /// Apply database migrations, then exit.
    Migrate,
    /// Print the OpenAPI spec (or write it to a file).
    Openapi {
        /// Write here instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Openapi { output } = &command {
        return write_spec(output.as_deref());
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("cognie-sync: {e}");
            return ExitCode::from(2);
        }
    };
    let _telemetry = match telemetry::init(config.log_format, config.log_file.as_deref()) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("cognie-sync: cannot set up logging: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cognie-sync: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Serve => run(config, Role::Serve).await,
            Command::Api => run(config, Role::Api).await,
            Command::Worker => run(config, Role::Worker).await,
            Command::Migrate => {
                app::connect_and_migrate(&config, None).await.map(|_| tracing::info!("migrations applied"))
            }
            Command::Openapi { .. } => unreachable!("handled above"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "cognie-sync stopped with an error");
            eprintln!("cognie-sync: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, role: Role) -> anyhow::Result<()> {
    let app = App::build(config, role).await?;
    app.run_until(shutdown_signal()).await
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn write_spec(output: Option<&std::path::Path>) -> ExitCode {
    let spec = http::spec_json();
    match output {
        None => {
            println!("{spec}");
            ExitCode::SUCCESS
        }
        Some(path) => match std::fs::write(path, format!("{spec}\n")) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cognie-sync: cannot write {}: {e}", path.display());
                ExitCode::FAILURE
            }
        },
    }
}
