//! A job that guards a file write with a lock, and a file that checks the
//! fencing token.
//!
//! `cargo run -p paxlock-examples --bin fenced_job [client.toml] [file]`
//! takes the lock `report-file`, appends a line to the file through
//! `FencedFile` with the grant's token, and releases. Run it twice in
//! parallel: the writes never interleave, and a writer whose lease ran out
//! (try `kill -STOP` on one for longer than the TTL) is refused by the file
//! itself, not just by its own belief.

use std::time::Duration;

use anyhow::Context;
use paxlock_examples::fenced_file::FencedFile;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = paxlock::Config::from_file(paxlock_examples::client_config_path())?;
    let file = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "fenced-report.txt".to_string());
    let client = paxlock::Client::connect(config)
        .await
        .context("connecting")?;
    let guard = client
        .lock("report-file")
        .timeout(Duration::from_secs(30))
        .acquire()
        .await?;
    let token = guard.fencing_token();
    println!("holding report-file with fencing token {token}");
    // Simulate work; check the lease right before touching the resource.
    tokio::time::sleep(Duration::from_millis(500)).await;
    if !guard.is_valid() {
        anyhow::bail!("lease ran out before the write; not writing");
    }
    let line = format!("written by pid {} with token {token}", std::process::id());
    FencedFile::new(&file).append(token, &line)?;
    println!("wrote to {file}");
    guard.release().await?;
    client.close().await?;
    Ok(())
}
