//! `chorus-llm-mock`: a mock provider for benchmarks. Every request on any
//! provider API gets the same paced answer; nothing is recorded, so each
//! stream costs a connection, its frames and one timer.

use std::net::SocketAddr;
use std::time::Duration;

use chorus_llm_mock::{MockOptions, MockServer, Recording, Script, Turn, Wire};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Mock OpenAI/Gemini/Anthropic streaming server for benchmarks")]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Text chunks in each answer.
    #[arg(long, default_value_t = 40)]
    chunks: usize,
    /// Frames per second per stream (0: as fast as possible).
    #[arg(long, default_value_t = 20.0)]
    chunks_per_second: f64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let text: String = (1..=args.chunks).map(|i| format!("word{i} ")).collect();
    let delay = if args.chunks_per_second > 0.0 {
        Duration::from_secs_f64(1.0 / args.chunks_per_second)
    } else {
        Duration::ZERO
    };
    let default = Script::turn(
        Turn::new()
            .text(text.trim_end())
            .usage(40, args.chunks as u64, 0),
    )
    .chunk_delay(delay);
    let server = MockServer::start_with(MockOptions {
        bind: args.bind,
        default,
        recording: Recording::Off,
        max_recorded: 0,
    })
    .await?;
    // The benchmark reads this line to learn the port.
    println!(
        "listening on http://{} (OpenAI base {})",
        server.addr(),
        server.base_url(Wire::OpenAi)
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
