//! The `sessiond` command: parse the CLI, set up logging, load the config, bind, run.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use sessiond::config::{
    Config, EngineKind, LogFormat, Overrides, RedisUrlOverride, StreamsOverride,
};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "sessiond",
    version,
    about = "Self-hosted sessions, caches and realtime state"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ConfigArgs),
    /// Load and validate the configuration, print it (keys redacted), and exit.
    CheckConfig(ConfigArgs),
}

#[derive(Args)]
struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, host:port; a name such as localhost is resolved [default: 127.0.0.1:7700].
    #[arg(long, value_name = "ADDR", value_parser = sessiond::listen::parse)]
    listen: Option<SocketAddr>,
    /// Data directory of the SQLite engine, relative to the working directory [default: sessiond-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Storage engine: sqlite, redis or memory [default: sqlite].
    #[arg(long, value_name = "ENGINE")]
    engine: Option<EngineKind>,
    /// Redis URL for --engine redis.
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// An accepted API key (repeatable); also SESSIOND_API_KEYS=key1,key2.
    #[arg(
        long = "api-key",
        value_name = "KEY",
        env = "SESSIOND_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_keys: Vec<String>,
    /// Durable Streams: how long a long-poll read waits at the tail (milliseconds).
    #[arg(long, value_name = "MS")]
    long_poll_timeout_ms: Option<u64>,
    /// Durable Streams: largest body of one catch-up read page (bytes).
    #[arg(long, value_name = "BYTES")]
    max_read_chunk_bytes: Option<usize>,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<Config> {
        let overrides = Overrides {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            engine: self.engine,
            api_keys: (!self.api_keys.is_empty()).then(|| self.api_keys.clone()),
            redis_url: self.redis_url.clone().map(|url| RedisUrlOverride { url }),
            streams: StreamsOverride {
                long_poll_timeout_ms: self.long_poll_timeout_ms,
                max_read_chunk_bytes: self.max_read_chunk_bytes,
            },
        };
        Config::load(self.config.as_deref(), &overrides)
    }
}

fn init_logging(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal received");
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig(args) => args.load().and_then(|config| {
            print!("{}", config.to_redacted_toml()?);
            eprintln!("configuration OK");
            Ok(())
        }),
        Command::Serve(args) => match args.load() {
            Err(e) => Err(e),
            Ok(config) => {
                init_logging(&config);
                match tokio::net::TcpListener::bind(config.listen).await {
                    Err(e) => Err(anyhow::anyhow!("cannot listen on {}: {e}", config.listen)),
                    Ok(listener) => sessiond::run(config, listener, termination()).await,
                }
            }
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sessiond: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
