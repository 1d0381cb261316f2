//! A worker pool where exactly one instance does the scheduled work.
//!
//! Start several: `cargo run -p paxlock-examples --bin leader_worker`. One
//! is elected and "works" every second; the others wait as candidates.
//! Kill the leader (Ctrl-C resigns at once; kill -9 lets its session expire)
//! and the next candidate takes over. The election term is passed along
//! with every unit of work as its fencing token.

use std::time::Duration;

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = paxlock::Config::from_file(paxlock_examples::client_config_path())?;
    let client = paxlock::Client::connect(config)
        .await
        .context("connecting")?;
    let me = format!("worker-{}", std::process::id());
    println!("{me}: campaigning for nightly-report");
    let leadership = client
        .election("nightly-report")
        .campaign(me.clone())
        .await?;
    println!("{me}: elected, term {}", leadership.term());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if !leadership.is_valid() {
                    break;
                }
                println!("{me}: doing the scheduled work (term {})", leadership.term());
            }
            _ = leadership.lost() => break,
            _ = tokio::signal::ctrl_c() => {
                println!("{me}: resigning");
                leadership.resign().await?;
                client.close().await?;
                return Ok(());
            }
        }
    }
    println!("{me}: leadership lost; stopping work");
    Ok(())
}
