use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use atmosphere::cli::{self, Cli};

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let filter = match &cli.log {
        Some(f) => EnvFilter::try_new(f),
        None => EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new("info")),
    };
    let filter = filter.unwrap_or_else(|e| {
        eprintln!("atmosphere: invalid log filter: {e}");
        std::process::exit(2);
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal, not in container or CI logs.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Err(e) = cli::run(cli).await {
        eprintln!("atmosphere: {e:#}");
        std::process::exit(1);
    }
}
