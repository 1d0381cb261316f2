//! `paxlock status`: each node, who leads, commit index, lag, and the
//! protocol its log records (2 until every node is upgraded).

use std::path::Path;
use std::time::Duration;

/// Asks every node in the client config for its own view and prints one
/// line per node; lag is how many slots a node's commit index trails the
/// highest one seen.
pub async fn run(config: &Path) -> anyhow::Result<()> {
    let config = paxlock::Config::from_file(config)?;
    let tls = paxlock::tls::TlsMaterial::load(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
    let timeout = config.connect_timeout.max(Duration::from_secs(1));
    let mut rows = Vec::new();
    for endpoint in &config.endpoints {
        rows.push((
            endpoint.clone(),
            paxlock::admin::node_status(&tls, endpoint, timeout).await,
        ));
    }
    let highest = rows
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().map(|s| s.commit_index))
        .max()
        .unwrap_or(0);
    let leaders: Vec<u64> = rows
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .filter(|s| s.leader_node_id == s.node_id)
        .map(|s| s.node_id)
        .collect();
    match leaders.as_slice() {
        [id] => println!("leader: node {id}"),
        [] => println!("leader: none (no node reports leading)"),
        many => {
            println!("leader: several nodes report leading {many:?} (a transition is under way)")
        }
    }
    println!(
        "{:<6} {:<24} {:<9} {:>8} {:>8} {:>5} {:>8}",
        "node", "address", "role", "commit", "applied", "lag", "protocol"
    );
    for (endpoint, row) in rows {
        match row {
            Ok(s) => {
                let role = if s.leader_node_id == s.node_id {
                    "leader"
                } else {
                    "follower"
                };
                println!(
                    "{:<6} {:<24} {:<9} {:>8} {:>8} {:>5} {:>8}",
                    s.node_id,
                    endpoint,
                    role,
                    s.commit_index,
                    s.applied_index,
                    highest.saturating_sub(s.commit_index),
                    s.cluster_protocol
                );
            }
            Err(e) => println!("{:<6} {:<24} unreachable: {e}", "?", endpoint),
        }
    }
    Ok(())
}
