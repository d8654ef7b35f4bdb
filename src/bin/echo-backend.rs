//! `echo-backend`: the deterministic OpenAI-compatible backend used by tests,
//! benchmarks and the testnet (see `atmosphere::echo`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use atmosphere::echo::{Echo, Fault, Flavour};

#[derive(Parser)]
#[command(about = "An OpenAI-compatible backend that answers naming itself")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Name shown in every reply.
    #[arg(long, default_value = "echo")]
    name: String,
    /// API flavour to imitate.
    #[arg(long, value_enum, default_value = "openai")]
    flavour: Flavour,
    /// Models (or LlamaFarm projects) to list; repeat or separate by commas.
    #[arg(long, value_delimiter = ',', default_value = "echo-model")]
    model: Vec<String>,
    /// Misbehave on purpose.
    #[arg(long, value_enum, default_value = "none")]
    fault: Fault,
    /// Milliseconds between streamed chunks.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Milliseconds each answer takes before its first byte.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Answers worked on at once (the rest queue); 0: no limit.
    #[arg(long, default_value_t = 0)]
    slots: usize,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let mut echo = Echo::new(&args.name, args.flavour, &[]);
    echo.models = args.model;
    echo.fault = args.fault;
    echo.chunk_delay = Duration::from_millis(args.chunk_delay_ms);
    echo.latency = Duration::from_millis(args.latency_ms);
    echo.slots = args.slots;
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("echo-backend: cannot listen on {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    if let Err(e) = echo.serve(listener).await {
        eprintln!("echo-backend: {e}");
        std::process::exit(1);
    }
}
