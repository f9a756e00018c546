//! The `sessiond` command: parse the CLI, set up logging, load the config, bind, run.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use sessiond::config::{
    Config, EngineKind, LogFormat, Overrides, RedisUrlOverride, StreamsOverride,
};
use sessiond_http::access_line::{buffer_lines, write_lines_directly, LineFormat};
use tracing_subscriber::EnvFilter;

mod allocator;

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
    /// Copy a SQLite data directory (database + local cold segments) as of one moment, while
    /// the server runs, into a new backup directory.
    Backup(BackupArgs),
    /// Put a backup into a new, empty data directory (start the server on it afterwards).
    Restore(RestoreArgs),
    /// Sessions of a running server (URL: --url or SESSIONCTL_URL; key: SESSIONCTL_API_KEY).
    Sessions(ClientCommand<SessionsCommand>),
    /// Durable Streams of a running server (URL: --url or SESSIONCTL_URL; key: SESSIONCTL_API_KEY).
    Streams(ClientCommand<StreamsCommand>),
}

/// Where the data directory is: the server's own configuration.
#[derive(Args)]
struct DataArgs {
    /// TOML configuration file (the server's: engine, data_dir, streams.cold).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory of the SQLite engine [default: from the configuration].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The server's API keys, only so that its configuration validates as it does at start.
    #[arg(
        long = "api-key",
        value_name = "KEY",
        env = "SESSIOND_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true,
        hide = true
    )]
    api_keys: Vec<String>,
}

impl DataArgs {
    fn load(&self) -> anyhow::Result<Config> {
        let overrides = Overrides {
            data_dir: self.data_dir.clone(),
            api_keys: (!self.api_keys.is_empty()).then(|| self.api_keys.clone()),
            ..Overrides::default()
        };
        Config::load(self.config.as_deref(), &overrides)
    }
}

#[derive(Args)]
struct BackupArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The backup directory to create (it must not exist).
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
}

#[derive(Args)]
struct RestoreArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The backup directory `sessiond backup` wrote.
    #[arg(long, value_name = "DIR")]
    from: PathBuf,
}

#[derive(Args)]
struct ClientCommand<T: Subcommand> {
    /// Base URL of the server [default: SESSIONCTL_URL, else http://127.0.0.1:7700].
    #[arg(long, value_name = "URL", global = true)]
    url: Option<String>,
    #[command(subcommand)]
    command: T,
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// List a user's live sessions, oldest first.
    List {
        /// The user id.
        #[arg(long, value_name = "USER")]
        user: String,
        /// Print the server's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke every session of a user (prints the revoked ids).
    Revoke {
        /// The user id.
        #[arg(long, value_name = "USER")]
        user: String,
    },
}

#[derive(Subcommand)]
enum StreamsCommand {
    /// List streams whose path starts with PREFIX (every page of GET /v1/streams).
    Ls {
        /// Path prefix, as in the stream's URL after /v1/stream/.
        #[arg(default_value = "")]
        prefix: String,
        /// Streams per request [default: the server's, 100].
        #[arg(long, value_name = "N")]
        page_size: Option<u32>,
        /// One JSON object per stream instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a stream's new messages as they arrive (SSE), until it is closed.
    Tail {
        /// The stream's path, as in its URL after /v1/stream/.
        path: String,
        /// Where to start: `now` (new messages only), `-1` (the beginning) or an offset.
        #[arg(
            long,
            value_name = "OFFSET",
            default_value = "now",
            allow_hyphen_values = true
        )]
        offset: String,
    },
}

async fn client_command<T: Subcommand>(
    args: ClientCommand<T>,
    run: impl AsyncFnOnce(&sessiond::client::Client, T) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let client = sessiond::client::Client::new(args.url)?;
    run(&client, args.command).await
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
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let line = match config.log.format {
        LogFormat::Json => {
            builder.json().init();
            LineFormat::Json
        }
        LogFormat::Pretty => {
            builder.init();
            LineFormat::Full
        }
    };
    // The access line is written by hand in the same format, to the same stderr (it is a
    // quarter of a small request's CPU through the generic formatter); with colours (a
    // terminal) it goes through the subscriber.
    if !ansi {
        write_lines_directly(line);
        let every = std::time::Duration::from_millis(config.log.access_flush_ms);
        if let Err(e) = buffer_lines(every) {
            tracing::warn!(error = %e, "cannot start the access log's writer thread; writing each line at once");
        }
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

fn main() -> std::process::ExitCode {
    allocator::huge_pages_off();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run()),
        Err(err) => {
            eprintln!("sessiond: cannot start the async runtime: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig(args) => args.load().and_then(|config| {
            print!("{}", config.to_redacted_toml()?);
            eprintln!("configuration OK");
            Ok(())
        }),
        Command::Backup(args) => args
            .data
            .load()
            .and_then(|config| sessiond::backup::backup(&config, &args.to)),
        Command::Restore(args) => args
            .data
            .load()
            .and_then(|config| sessiond::backup::restore(&config, &args.from)),
        Command::Sessions(args) => {
            client_command(args, async |client, command| match command {
                SessionsCommand::List { user, json } => {
                    sessiond::client::sessions_list(client, &user, json).await
                }
                SessionsCommand::Revoke { user } => {
                    sessiond::client::sessions_revoke(client, &user).await
                }
            })
            .await
        }
        Command::Streams(args) => {
            client_command(args, async |client, command| match command {
                StreamsCommand::Ls {
                    prefix,
                    page_size,
                    json,
                } => sessiond::client::streams_ls(client, &prefix, page_size, json).await,
                StreamsCommand::Tail { path, offset } => {
                    sessiond::client::streams_tail(client, &path, &offset).await
                }
            })
            .await
        }
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
    sessiond_http::access_line::flush();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sessiond: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
