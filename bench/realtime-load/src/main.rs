//! Load generator for realtime hubs (`bench/realtime/run`): one client for sessiond and for a
//! Socket.IO server, so both are measured by the same code on the same cores.
//!
//! Three modes, each printing one `RESULT key=value ...` line on stdout for the bench script:
//!
//! - `idle`: opens N sockets (bounded connect concurrency), waits until every handshake is
//!   done and the server's RSS has settled, and reports the server's VmRSS growth per socket.
//! - `broadcast`: K sockets subscribe to one channel/room; a publisher socket publishes
//!   fixed-size messages, each carrying its sequence number and send time, keeping at most W
//!   messages not yet received by all K; reports deliveries/s and delivery latency p50/p99.
//! - `presence`: U users × D devices on the seed protocol; per user, the devices take turns
//!   sending `update_presence`, and a round trip ends when all D devices received
//!   `presence_updated`; reports round trips/s and round-trip p50/p99.
//!
//! Arguments: `--help` of each mode.

mod broadcast;
mod idle;
mod presence;
mod wire;

use clap::{Args, Parser, Subcommand};
use sessiond_bench_kit::report::exit_on_error;

use wire::{Endpoint, Target};

/// Errors are messages for the operator.
pub type Res<T> = Result<T, String>;

#[derive(Parser)]
#[command(
    name = "sessiond-bench-realtime-load",
    about = "Load for realtime hubs (sessiond, Socket.IO)"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

/// Options of every mode: which server and where.
#[derive(Args)]
pub struct Server {
    /// `sessiond` or `socketio`
    #[arg(long)]
    target: String,
    /// HOST:PORT (broadcast: HOST:PORT[,HOST:PORT…], receivers spread over the nodes)
    #[arg(long)]
    addr: String,
    /// sessiond service key
    #[arg(long)]
    key: Option<String>,
    /// The server's pid, for its RSS and CPU time
    #[arg(long, default_value_t = 0)]
    pub pid: u32,
}

impl Server {
    fn endpoint(&self) -> Res<Endpoint> {
        Ok(Endpoint {
            addr: self.addr.clone(),
            target: Target::parse(&self.target)?,
            key: self.key.clone(),
        })
    }
}

#[derive(Subcommand)]
enum Mode {
    /// N idle sockets: server RSS per socket
    Idle(idle::IdleArgs),
    /// K subscribers of one channel, one publisher: deliveries/s and latency
    Broadcast(broadcast::BroadcastArgs),
    /// U users x D devices exchanging presence updates (seed protocol)
    Presence(presence::PresenceArgs),
}

async fn run(mode: Mode) -> Res<String> {
    match mode {
        Mode::Idle(a) => idle::run(&a, &a.server.endpoint()?).await,
        Mode::Broadcast(a) => broadcast::run(&a, &a.server.endpoint()?).await,
        Mode::Presence(a) => presence::run(&a, &a.server.endpoint()?).await,
    }
}

fn main() {
    let cli = Cli::parse();
    sessiond_bench_kit::latency::now_us();
    let runtime = exit_on_error(
        "sessiond-bench-realtime-load: cannot start the runtime",
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    );
    let line = exit_on_error(
        "sessiond-bench-realtime-load",
        runtime.block_on(run(cli.mode)),
    );
    println!("RESULT {line}");
    // Thousands of sockets may still be open; exiting closes them all at once.
    runtime.shutdown_background();
}
