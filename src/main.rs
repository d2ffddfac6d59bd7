//! The `hookrace` binary: parse the command line, start logging, call the library, map the
//! outcome to an exit code (0 ok, 64 bad usage or config, 1 runtime failure).

use std::process::ExitCode;

use clap::Parser;
use hookrace::cli::{Cli, Command, EXIT_FAILURE, EXIT_USAGE};
use hookrace::{config, daemon, telemetry};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    telemetry::init();
    match cli.command {
        Command::CheckConfig { config } => match config::load(config.as_deref()) {
            Ok(_) => {
                println!("configuration is valid");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::from(EXIT_USAGE as u8)
            }
        },
        Command::Run { config } => {
            let cfg = match config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(EXIT_USAGE as u8);
                }
            };
            exit(runtime().and_then(|rt| {
                rt.block_on(async {
                    let shutdown = CancellationToken::new();
                    hookrace::daemon::spawn_signal_handler(shutdown.clone())?;
                    let listeners = daemon::Listeners::bind(&cfg).await?;
                    daemon::run(cfg, listeners, shutdown).await
                })
            }))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hookrace: {e:#}");
            ExitCode::from(EXIT_FAILURE as u8)
        }
    }
}
