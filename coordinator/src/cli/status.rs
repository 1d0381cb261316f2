//! `paxlock status`: each node, who leads, commit index and lag.

use std::path::Path;

use anyhow::Context;

/// Connects with the client config at `config` and prints the cluster state.
pub async fn run(config: &Path) -> anyhow::Result<()> {
    let config = paxlock::Config::from_file(config)?;
    let endpoints = config.endpoints.clone();
    let client = paxlock::Client::connect(config)
        .await
        .with_context(|| format!("connecting to {}", endpoints.join(", ")))?;
    let status = client.status().await?;
    let leader = match status.leader_node_id {
        0 => "none known".to_string(),
        id => format!("node {id}"),
    };
    println!("answered by node {} | leader: {leader}", status.node_id);
    println!(
        "commit index {} | applied index {}",
        status.commit_index, status.applied_index
    );
    println!("{:<6} {:<24} {:<10} lag (slots)", "node", "address", "link");
    for peer in &status.peers {
        let link = if peer.connected { "connected" } else { "down" };
        println!(
            "{:<6} {:<24} {:<10} {}",
            peer.node_id, peer.addr, link, peer.lag_slots
        );
    }
    let _ = client.close().await;
    Ok(())
}
