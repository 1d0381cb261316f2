//! `paxlock acl get | set FILE | clear`: the cluster's access rules, for
//! an administrator (an identity named in the nodes' `[access] admins`, or
//! granted `admin` on the prefix "" by a rule).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

/// Access-rule actions.
#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Print the rules in force as a rules file (with its version, so
    /// that editing it and `acl set` changes exactly these rules).
    Get {
        /// Print JSON instead of a rules file.
        #[arg(long)]
        json: bool,
        /// The client config file (written by `paxlock dev`).
        #[arg(long, default_value = ".paxlock-dev/client.toml")]
        client_config: PathBuf,
    },
    /// Replace the rules with those of a TOML file of `[[rule]]` tables
    /// (`identities`, `permissions` from lock/campaign/read/admin,
    /// `prefixes`). If the file names the `version` it was read at (as
    /// `acl get` prints it), the change applies only if nobody changed the
    /// rules since.
    Set {
        /// The rules file.
        file: PathBuf,
        /// Apply even if the rules changed since the file's `version`.
        #[arg(long)]
        force: bool,
        /// The client config file (written by `paxlock dev`).
        #[arg(long, default_value = ".paxlock-dev/client.toml")]
        client_config: PathBuf,
    },
    /// Remove every rule and quota rule: every identity may lock, campaign
    /// and read again, within the default quotas.
    Clear {
        /// The client config file (written by `paxlock dev`).
        #[arg(long, default_value = ".paxlock-dev/client.toml")]
        client_config: PathBuf,
    },
}

/// Runs an access-rule action.
pub async fn run(action: AclCommand) -> anyhow::Result<()> {
    match action {
        AclCommand::Get {
            json,
            client_config,
        } => {
            let client = super::connect(&client_config).await?;
            let rules = client.access_rules().await;
            let _ = client.close().await;
            let rules = rules.context("reading the access rules")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rules)?);
                return Ok(());
            }
            if rules.rules.is_empty() {
                println!("# no rules: every identity may lock, campaign and read");
            }
            print!("{}", rules.to_toml()?);
            Ok(())
        }
        AclCommand::Set {
            file,
            force,
            client_config,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let wanted = paxlock::AccessRules::from_toml(&text)
                .with_context(|| format!("in {}", file.display()))?;
            let expected = (!force && wanted.version != 0).then_some(wanted.version);
            set(&client_config, &wanted, expected).await
        }
        AclCommand::Clear { client_config } => {
            set(&client_config, &paxlock::AccessRules::default(), None).await
        }
    }
}

async fn set(
    client_config: &Path,
    rules: &paxlock::AccessRules,
    expected: Option<u64>,
) -> anyhow::Result<()> {
    let client = super::connect(client_config).await?;
    let set = client.set_access_rules(rules, expected).await;
    let _ = client.close().await;
    let now = set.context("setting the access rules")?;
    println!(
        "access rules at version {}: {} rule(s), {} quota rule(s)",
        now.version,
        now.rules.len(),
        now.quotas.len()
    );
    Ok(())
}
