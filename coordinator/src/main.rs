//! The `paxlock` binary: node, dev cluster, certificates.

use std::process::ExitCode;

use clap::Parser;
use paxlock_coordinator::cli::{self, Cli};

/// mimalloc instead of glibc's malloc: under load the allocator was 7 % of
/// a node's CPU samples (malloc, free, consolidation); with mimalloc
/// `paxlock bench` at 64 clients runs about 10 % more cycles per second.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = "warn";
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PAXLOCK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or a supervisor's journal
        // gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.worker_threads() {
        builder.worker_threads(threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // One line per cause, no backtrace: the message must say what to fix.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
