//! Prints every leadership change of an election, in order.
//!
//! `cargo run -p paxlock-examples --bin leader_watch [client.toml] [election]`
//! (default election: `nightly-report`, the one `leader_worker` uses).
//! The stream resumes after reconnects without skipping a term; if the
//! cluster no longer has the history it missed, it says so.

use anyhow::Context;
use paxlock::LeaderEvent;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = paxlock::Config::from_file(paxlock_examples::client_config_path())?;
    let election = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "nightly-report".to_string());
    let client = paxlock::Client::connect(config)
        .await
        .context("connecting")?;
    let mut watch = client.election(election.clone()).watch();
    println!("watching {election}");
    loop {
        tokio::select! {
            event = watch.next() => match event? {
                LeaderEvent::Elected { term, value, identity, fencing_token } => {
                    println!(
                        "term {term}: {} leads (as {identity}, fencing token {})",
                        String::from_utf8_lossy(&value),
                        fencing_token.map_or("none".into(), |t| t.to_string())
                    );
                }
                LeaderEvent::ValueChanged { term, value, .. } => {
                    println!("term {term}: leader now says {}", String::from_utf8_lossy(&value));
                }
                LeaderEvent::NoLeader { term } => println!("term {term}: no leader"),
                LeaderEvent::HistoryGone => println!("(missed some changes while disconnected)"),
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    client.close().await?;
    Ok(())
}
