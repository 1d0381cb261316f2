//! `paxlock status`: each node, who leads, commit index, lag, the
//! protocol its log records (2 until every node is upgraded), and how full
//! the state is.

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
    // The membership as the most advanced node has applied it.
    let ahead = rows
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .filter(|s| !s.voters.is_empty())
        .max_by_key(|s| s.commit_index);
    if let Some(s) = ahead {
        println!(
            "members: voters {}; learners {}{}",
            id_list(&s.voters),
            id_list(&s.learners),
            if s.membership_change_at > 0 {
                format!("; a change takes effect at slot {}", s.membership_change_at)
            } else {
                String::new()
            }
        );
    }
    match leaders.as_slice() {
        [id] => println!("leader: node {id}"),
        [] => println!("leader: none (no node reports leading)"),
        many => {
            println!("leader: several nodes report leading {many:?} (a transition is under way)")
        }
    }
    println!(
        "{:<6} {:<24} {:<9} {:>8} {:>8} {:>5} {:>8} {:>22}",
        "node", "address", "role", "commit", "applied", "lag", "protocol", "state"
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
                    "{:<6} {:<24} {:<9} {:>8} {:>8} {:>5} {:>8} {:>22}",
                    s.node_id,
                    endpoint,
                    role,
                    s.commit_index,
                    s.applied_index,
                    highest.saturating_sub(s.commit_index),
                    s.cluster_protocol,
                    state_fill(s.state_bytes, s.max_state_bytes)
                );
            }
            Err(e) => println!("{:<6} {:<24} unreachable: {e}", "?", endpoint),
        }
    }
    Ok(())
}

/// "1, 2, 3", or "none".
pub(crate) fn id_list(ids: &[u64]) -> String {
    if ids.is_empty() {
        return "none".into();
    }
    let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
    ids.join(", ")
}

/// "12.3 MiB/256 MiB (5%)": the state's counted bytes against their
/// bound; "-" from a node that does not report them.
fn state_fill(bytes: u64, max: u64) -> String {
    if max == 0 {
        return "-".into();
    }
    format!(
        "{}/{} ({:.0}%)",
        human_bytes(bytes),
        human_bytes(max),
        100.0 * bytes as f64 / max as f64
    )
}

/// Bytes in the largest binary unit that keeps the number at least one.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
