//! `paxlock certs init`: write a development PKI; `paxlock certs
//! issue-client` / `issue-node`: one more client or node certificate from
//! an existing CA.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

/// Certificate actions.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Make a cluster CA, node certificates and a client certificate.
    Init {
        /// How many nodes (ids 1..=N).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=7))]
        nodes: u64,
        /// Output folder for ca.pem and the node and client certificates
        /// and keys (git-ignored by default).
        #[arg(long, default_value = "certs/dev")]
        out: PathBuf,
        /// Folder for the CA's private key (and a copy of ca.pem), apart
        /// from the node keys; keep it offline. Default: OUT's name with
        /// `-ca` (certs/dev-ca).
        #[arg(long)]
        ca_dir: Option<PathBuf>,
        /// The cluster's name, written into the CA's subject.
        #[arg(long, default_value = "dev")]
        cluster: String,
        /// Client identities to issue certificates for.
        #[arg(long = "client", default_value = "dev-client")]
        clients: Vec<String>,
        /// Extra SANs (DNS names or IPs) for every node certificate, for
        /// nodes on real hosts.
        #[arg(long = "san")]
        sans: Vec<String>,
    },
    /// Issue one more client certificate from the cluster CA. Its name is
    /// the identity the client's requests act as: sessions belong to it.
    IssueClient {
        /// The identity (certificate common name): 1-64 characters from
        /// [A-Za-z0-9._-].
        name: String,
        /// The cluster CA certificate (`certs init` wrote it into OUT and
        /// into the CA folder).
        #[arg(long)]
        ca_cert: PathBuf,
        /// The cluster CA private key (`certs init` wrote it into the CA
        /// folder, certs/dev-ca/ca.key by default).
        #[arg(long)]
        ca_key: PathBuf,
        /// Output folder for client-<name>.pem and client-<name>.key.
        #[arg(long, default_value = "certs/dev")]
        out: PathBuf,
    },
    /// Issue the certificate of a new node (one to add to a running
    /// cluster: `paxlock members add`) from the cluster CA. Give it an id
    /// the cluster never used: a removed member's id is never admitted
    /// again.
    IssueNode {
        /// The new node's id (1 to 1023).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1023))]
        id: u64,
        /// The cluster CA certificate.
        #[arg(long)]
        ca_cert: PathBuf,
        /// The cluster CA private key.
        #[arg(long)]
        ca_key: PathBuf,
        /// Extra SANs (DNS names or IPs) for a node on a real host.
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Output folder for node-<id>.pem and node-<id>.key.
        #[arg(long, default_value = "certs/dev")]
        out: PathBuf,
    },
}

/// Runs a certificate action.
pub fn run(action: CertsCommand) -> anyhow::Result<()> {
    match action {
        CertsCommand::Init {
            nodes,
            out,
            ca_dir,
            cluster,
            clients,
            sans,
        } => {
            let clients: Vec<&str> = clients.iter().map(String::as_str).collect();
            let ca_dir = ca_dir.unwrap_or_else(|| paxlock_certs::default_ca_dir(&out));
            let paths =
                paxlock_certs::write_dev_pki(&out, &ca_dir, &cluster, nodes, &sans, &clients)
                    .with_context(|| format!("writing certificates to {}", out.display()))?;
            println!("CA certificate: {}", paths.ca_cert.display());
            println!(
                "CA key: {} (apart from the node keys; keep it offline)",
                paths.ca_key.display()
            );
            for (id, cert, key) in &paths.nodes {
                println!("node {id}: {} {}", cert.display(), key.display());
            }
            for (name, cert, key) in &paths.clients {
                println!("client {name}: {} {}", cert.display(), key.display());
            }
            println!(
                "private keys are mode 0600; keep {} out of version control",
                out.display()
            );
            Ok(())
        }
        CertsCommand::IssueClient {
            name,
            ca_cert,
            ca_key,
            out,
        } => {
            let (cert, key) = paxlock_certs::issue_client_files(&ca_cert, &ca_key, &name, &out)
                .with_context(|| format!("issuing a client certificate for {name:?}"))?;
            println!("client {name}: {} {}", cert.display(), key.display());
            Ok(())
        }
        CertsCommand::IssueNode {
            id,
            ca_cert,
            ca_key,
            sans,
            out,
        } => {
            let (cert, key) = paxlock_certs::issue_node_files(&ca_cert, &ca_key, id, &sans, &out)
                .with_context(|| format!("issuing a certificate for node {id}"))?;
            println!("node {id}: {} {}", cert.display(), key.display());
            Ok(())
        }
    }
}
