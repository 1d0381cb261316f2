//! `paxlock members list | add | promote | remove | replace`: the
//! cluster's membership and an administrator's changes to it, one step at
//! a time (PROTOCOL.md, "Membership").

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use paxlock::{MemberChange, Members};

use super::inspect::{ask, print_json};
use super::status::id_list;

/// Membership actions.
#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// The voters and learners, with their addresses, links and lag.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The client config file (written by `paxlock dev`).
        #[arg(long, default_value = ".paxlock-dev/client.toml")]
        client_config: PathBuf,
    },
    /// Add node ID as a learner: it receives the log and does not vote.
    /// The node must be running (`join = true` in its config) and reachable
    /// at ADDR with a certificate naming it (`paxlock certs issue-node`).
    Add {
        /// The new node's id: never used before in this cluster.
        id: u64,
        /// Where the node listens for its peers (ip:port).
        #[arg(long)]
        addr: SocketAddr,
        /// How the change is asked.
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Make learner ID a voter, once it has caught up with the leader.
    Promote {
        /// The learner.
        id: u64,
        /// How the change is asked.
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Remove member ID for good (its id is never used again); a leader
    /// hands leadership over first. The removed node stops, saying so.
    Remove {
        /// The member.
        id: u64,
        /// How the change is asked.
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Replace member OLD by a new node NEW at ADDR: add NEW as a learner,
    /// promote it once it has caught up, then remove OLD. Each step waits
    /// until it is in effect.
    Replace {
        /// The member leaving.
        old: u64,
        /// The node taking its place (running, with `join = true`).
        new: u64,
        /// Where NEW listens for its peers.
        #[arg(long)]
        addr: SocketAddr,
        /// The client config file of an administrator.
        #[arg(long, default_value = ".paxlock-dev/client.toml")]
        client_config: PathBuf,
    },
}

/// How a single change is asked.
#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// Return once the leader has taken the change, without waiting until
    /// it is in effect.
    #[arg(long)]
    no_wait: bool,
    /// The client config file of an administrator.
    #[arg(long, default_value = ".paxlock-dev/client.toml")]
    client_config: PathBuf,
}

/// Runs a membership action.
pub async fn run(action: MembersCommand) -> anyhow::Result<()> {
    match action {
        MembersCommand::List {
            json,
            client_config,
        } => {
            let members = ask(&client_config, async |c| c.members().await)
                .await
                .context("listing members")?;
            if json {
                return print_json(&members);
            }
            print_table(&members);
            Ok(())
        }
        MembersCommand::Add { id, addr, change } => {
            let step = MemberChange::AddLearner { id, addr };
            one_step(
                step,
                &change,
                &format!("added node {id} ({addr}) as a learner"),
            )
            .await
        }
        MembersCommand::Promote { id, change } => {
            let step = MemberChange::Promote(id);
            one_step(step, &change, &format!("promoted node {id} to voter")).await
        }
        MembersCommand::Remove { id, change } => {
            let step = MemberChange::Remove(id);
            one_step(step, &change, &format!("removed node {id}")).await
        }
        MembersCommand::Replace {
            old,
            new,
            addr,
            client_config,
        } => replace(old, new, addr, &client_config).await,
    }
}

async fn one_step(step: MemberChange, args: &ChangeArgs, did: &str) -> anyhow::Result<()> {
    let wait = !args.no_wait;
    let members = ask(&args.client_config, async |c| {
        c.change_membership(step, wait).await
    })
    .await
    .with_context(|| format!("changing the membership ({step:?})"))?;
    let when = if wait {
        "in effect"
    } else {
        "taken by the leader, not yet in effect"
    };
    println!("{did} ({when}); {}", summary(&members));
    Ok(())
}

async fn replace(old: u64, new: u64, addr: SocketAddr, config: &Path) -> anyhow::Result<()> {
    let steps = [
        (
            MemberChange::AddLearner { id: new, addr },
            format!("added node {new} ({addr}) as a learner"),
        ),
        (
            MemberChange::Promote(new),
            format!("promoted node {new} to voter"),
        ),
        (MemberChange::Remove(old), format!("removed node {old}")),
    ];
    let client = super::connect(config).await?;
    for (step, did) in steps {
        let made = step_until_made(&client, step).await;
        let members = match made {
            Ok(members) => members,
            Err(e) => {
                let _ = client.close().await;
                return Err(e).with_context(|| {
                    format!("replacing node {old} by node {new}: {step:?} failed after the steps above (run the command again to go on)")
                });
            }
        };
        println!("{did} (in effect); {}", summary(&members));
    }
    let _ = client.close().await;
    Ok(())
}

/// How long `replace` asks again for one step that is refused for now (a
/// learner still catching up, another change in flight).
const STEP_PATIENCE: Duration = Duration::from_secs(300);

/// Makes `step` and waits until it is in effect, for up to
/// [`STEP_PATIENCE`], saying once why it waits.
async fn step_until_made(
    client: &paxlock::Client,
    step: MemberChange,
) -> Result<Members, paxlock::Error> {
    let mut said = false;
    client
        .change_membership_until_made(step, STEP_PATIENCE, |e| {
            if !said {
                println!("waiting: {e}");
                said = true;
            }
        })
        .await
}

fn summary(members: &Members) -> String {
    format!(
        "voters {}; learners {}",
        id_list(&members.voters()),
        id_list(&members.learners())
    )
}

fn print_table(members: &Members) {
    println!("{}", summary(members));
    if let Some(at) = members.change_at {
        println!("a chosen change takes effect at slot {at}");
    }
    println!(
        "as node {} sees it at commit index {}; leader: {}",
        members.answered_by,
        members.commit_index,
        members
            .leader
            .map_or("none known".to_string(), |l| format!("node {l}"))
    );
    println!(
        "{:<6} {:<8} {:<24} {:<10} {:>6}",
        "node", "role", "address", "link", "lag"
    );
    for m in &members.members {
        println!(
            "{:<6} {:<8} {:<24} {:<10} {:>6}",
            m.node_id,
            if m.voter { "voter" } else { "learner" },
            m.addr.map_or("unknown".to_string(), |a| a.to_string()),
            if m.connected { "up" } else { "down" },
            m.lag_slots
        );
    }
}
