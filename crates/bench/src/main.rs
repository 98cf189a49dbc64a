//! `chorus-bench`: the load generator for the realtime rows of the bar in
//! `docs/decisions.md`. It drives a running Chorus server over loopback only; every
//! scenario is bounded in count and time and stops by itself, prints a
//! result block with PASS/FAIL against the bar and can append a JSON line to
//! a results file. See BENCHMARKS.md and `scripts/bench.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // The load generator: a failure should stop the run where it happens.

mod conn;
mod frame;
mod hold;
mod http;
mod publish;
mod report;
mod scenario;
mod server;
mod sse;
mod stats;
mod token;
mod util;
mod ws;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::report::Report;
use crate::token::Minter;
use crate::util::{CpuMeter, SourceAddrs, Target, parse_duration};

#[derive(Parser)]
#[command(name = "chorus-bench", version, about = "Load generator for the Chorus bar: drives a running server on loopback")]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone, Debug)]
pub struct Common {
    /// The server (loopback only). Several (repeated or comma-separated) are
    /// the nodes of one deployment: the first is node 1, where publishers
    /// and probes go; scenarios spread their clients over all of them.
    #[arg(long, global = true, env = "CHORUS_BENCH_URL", default_value = "http://127.0.0.1:8080", value_delimiter = ',')]
    pub url: Vec<String>,
    /// HS256 secret the server verifies tokens with.
    #[arg(long, global = true, env = "CHORUS_BENCH_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// A file holding the secret.
    #[arg(long, global = true)]
    pub secret_file: Option<PathBuf>,
    /// The server's data directory; its `jwt-secret` is used when no secret is given.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// API key for the server publish API.
    #[arg(long, global = true, env = "CHORUS_BENCH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// PID of the server process, for RSS and CPU readings.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// PIDs of the rest of the deployment under test (the other nodes,
    /// Redis, PostgreSQL): their CPU is reported apart from the rest of the
    /// machine (repeated or comma-separated).
    #[arg(long, global = true, value_delimiter = ',')]
    pub deployment_pid: Vec<u32>,
    /// Append one JSON line per run to this file.
    #[arg(long, global = true)]
    pub results: Option<PathBuf>,
    /// Name of the row of the bar (defaults to one derived from the parameters).
    #[arg(long, global = true)]
    pub row: Option<String>,
    /// Source addresses 127.0.0.1..=127.0.0.N used in turn (ephemeral ports).
    #[arg(long, global = true, default_value_t = 8)]
    pub src_addrs: u8,
    /// First source address is 127.0.0.(1 + offset) (worker processes get their own).
    #[arg(long, global = true, default_value_t = 0, hide = true)]
    pub src_offset: u8,
    /// Runtime worker threads of the generator.
    #[arg(long, global = true, default_value_t = 2)]
    pub threads: usize,
    /// Time allowed for one connection's upgrade and first frame.
    #[arg(long, global = true, default_value = "15s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
}

#[derive(Subcommand)]
enum Cmd {
    /// N idle authenticated WebSocket connections, each subscribed to its own
    /// `user:<id>`: server RSS per connection (bar ≤ 8 KiB, 15,000 held).
    Idle(scenario::idle::IdleArgs),
    /// New WebSocket connections per second with the JWT verified at upgrade,
    /// counted when `connected` arrives (bar ≥ 10,000/s).
    ConnectRate(scenario::idle::ConnectRateArgs),
    /// One channel, S subscribers, R msg/s for D s through the publish API
    /// (with several `--url`s: subscribers spread over them, published on the first).
    Fanout(scenario::fanout::FanoutArgs),
    /// The per-user limit across nodes: users hold the limit's connections on
    /// nodes 1..n-1 and open one more on node n; time to the oldest's close
    /// (bar p99 ≤ 100 ms), exactly the limit left per user. Needs 2+ `--url`s.
    Eviction(scenario::eviction::EvictionArgs),
    /// The throughput ceiling through the broker: one subscriber per channel
    /// over every node, batch publishes on every node at rising rates, until
    /// delivery falls behind or p99 passes the bound.
    Ceiling(scenario::ceiling::CeilingArgs),
    /// Users on their own channels receiving agent-run events via the batch API.
    AgentStreams(scenario::streams::AgentArgs),
    /// Users on their own channels; all connections cut, reconnect with `since`.
    RecoveryStorm(scenario::streams::StormArgs),
    /// SSE clients on their own channels, then the same storm with `Last-Event-ID`.
    Sse(scenario::streams::SseArgs),
    /// Chat messages over WebSocket: users in channels send `send_message` on
    /// a schedule; ack latency (committed and acknowledged) and delivery to
    /// every member (bar: p99 ≤ 5 ms on SQLite, ≤ 10 ms on PostgreSQL).
    MessageRtt(scenario::messages::MessageArgs),
    /// Hosted agent runs against `chorus-llm-mock --stamp`, each watched by
    /// subscribed clients: gateway overhead per streamed chunk (bar p99 ≤ 10 ms),
    /// exactly one terminal event per run, memory per active run (≤ 64 KiB).
    AgentRuns(scenario::runs::RunArgs),
    /// Password logins over REST; server RSS before and after (bar: 1,000
    /// logins leave RSS within 64 MB of the start).
    Logins(scenario::logins::LoginArgs),
    /// Connect/subscribe/disconnect cycles; server counts back to baseline.
    Churn(scenario::churn::ChurnArgs),
    /// Long run with connection replacement and steady events; drift of RSS,
    /// tasks and /health latency.
    Soak(scenario::soak::SoakArgs),
    /// Worker process of `idle` and `connect-rate` (driven over stdin/stdout).
    #[command(hide = true)]
    WsHold(hold::HoldArgs),
}

/// What every scenario needs.
pub struct Ctx {
    /// Node 1 (the first `--url`).
    pub target: Target,
    /// Every node, node 1 first.
    pub nodes: Vec<Target>,
    pub minter: Minter,
    pub api_key: Option<Arc<str>>,
    pub server_pid: Option<u32>,
    pub src: SourceAddrs,
    pub connect_timeout: Duration,
    pub common: Common,
}

impl Ctx {
    fn new(common: &Common) -> anyhow::Result<Self> {
        let nodes = common.url.iter().map(|u| Target::parse(u)).collect::<anyhow::Result<Vec<_>>>()?;
        let target = nodes.first().cloned().context("--url: at least one server")?;
        let minter = Minter::from_sources(common.secret.as_deref(), common.secret_file.as_deref(), common.data_dir.as_deref(), 3 * 3600)?;
        Ok(Self {
            src: SourceAddrs::new(&target, common.src_addrs, common.src_offset),
            target,
            nodes,
            minter,
            api_key: common.api_key.as_deref().map(Arc::from),
            server_pid: common.server_pid,
            connect_timeout: common.connect_timeout,
            common: common.clone(),
        })
    }

    /// A CPU meter over the server and the rest of the deployment.
    pub fn cpu_meter(&self) -> CpuMeter {
        CpuMeter::start(self.server_pid).with_deployment(&self.common.deployment_pid)
    }

    /// Node `i` (0-based, wrapping), so client `i` of a scenario goes to
    /// `node(i)` and clients spread evenly.
    pub fn node(&self, i: usize) -> &Target {
        &self.nodes[i % self.nodes.len()]
    }

    pub fn api_key(&self) -> anyhow::Result<Arc<str>> {
        self.api_key.clone().context("this scenario publishes: pass --api-key (one of the server's [auth] api_keys)")
    }

    /// The row label: `--row` or the scenario's own.
    pub fn row(&self, default: String) -> String {
        self.common.row.clone().unwrap_or(default)
    }
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(cli.common.threads.max(1)).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chorus-bench: cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = runtime.block_on(run(cli));
    // Connection tasks may still be parked on sockets; do not wait for them.
    runtime.shutdown_timeout(Duration::from_millis(200));
    std::process::exit(code);
}

async fn run(cli: Cli) -> i32 {
    if let Cmd::WsHold(args) = &cli.cmd {
        return match hold::run(&cli.common, args).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("chorus-bench ws-hold: {e:#}");
                2
            }
        };
    }
    let ctx = match Ctx::new(&cli.common) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("chorus-bench: {e:#}");
            return 2;
        }
    };
    let result: anyhow::Result<Report> = match &cli.cmd {
        Cmd::Idle(a) => scenario::idle::idle(&ctx, a).await,
        Cmd::ConnectRate(a) => scenario::idle::connect_rate(&ctx, a).await,
        Cmd::Fanout(a) => scenario::fanout::run(&ctx, a).await,
        Cmd::Eviction(a) => scenario::eviction::run(&ctx, a).await,
        Cmd::Ceiling(a) => scenario::ceiling::run(&ctx, a).await,
        Cmd::AgentStreams(a) => scenario::streams::agent_streams(&ctx, a).await,
        Cmd::RecoveryStorm(a) => scenario::streams::recovery_storm(&ctx, a).await,
        Cmd::Sse(a) => scenario::streams::sse(&ctx, a).await,
        Cmd::MessageRtt(a) => scenario::messages::run(&ctx, a).await,
        Cmd::AgentRuns(a) => scenario::runs::run(&ctx, a).await,
        Cmd::Logins(a) => scenario::logins::run(&ctx, a).await,
        Cmd::Churn(a) => scenario::churn::run(&ctx, a).await,
        Cmd::Soak(a) => scenario::soak::run(&ctx, a).await,
        Cmd::WsHold(_) => unreachable!("handled above"),
    };
    match result {
        Ok(report) => {
            report.print();
            if let Some(path) = &cli.common.results {
                let command = std::env::args().map(|a| shell_quote(&a)).collect::<Vec<_>>().join(" ");
                if let Err(e) = report.append_json(path, &command) {
                    eprintln!("chorus-bench: {e:#}");
                }
            }
            if report.pass() { 0 } else { 1 }
        }
        Err(e) => {
            eprintln!("chorus-bench: {e:#}");
            2
        }
    }
}

/// Quotes an argument for the recorded command line; secrets are never
/// passed as arguments by the runner (they come from the environment).
fn shell_quote(a: &str) -> String {
    if a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@".contains(c)) { a.to_owned() } else { format!("'{}'", a.replace('\'', "'\\''")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_urls_are_the_nodes_in_order_and_clients_spread_over_them() {
        let cli = Cli::try_parse_from([
            "chorus-bench",
            "--url",
            "http://127.0.0.1:1,http://127.0.0.1:2",
            "--url",
            "http://127.0.0.1:3",
            "--secret",
            "0123456789abcdef0123456789abcdef",
            "--deployment-pid",
            "10,11",
            "fanout",
        ])
        .unwrap();
        let ctx = Ctx::new(&cli.common).unwrap();
        assert_eq!(ctx.nodes.iter().map(|t| t.addr.port()).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(ctx.target.addr.port(), 1);
        assert_eq!((0..6).map(|i| ctx.node(i).addr.port()).collect::<Vec<_>>(), [1, 2, 3, 1, 2, 3]);
        assert_eq!(cli.common.deployment_pid, [10, 11]);
        let bad = Cli::try_parse_from(["chorus-bench", "--url", "http://127.0.0.1:1,http://10.0.0.1:2", "--secret", "x", "fanout"]).unwrap();
        assert!(Ctx::new(&bad.common).is_err(), "every node must be loopback");
    }
}
