//! `paxlock-certs OUT_DIR [NODES]`: writes a development PKI.
//!
//! The same thing is available as `paxlock certs init`; this small binary
//! exists so the PKI can be made without building the coordinator.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().unwrap_or_else(|| "certs/dev".to_string()));
    let nodes = match args.next().map(|n| n.parse::<u64>()) {
        None => 3,
        Some(Ok(n)) if (1..=7).contains(&n) => n,
        Some(_) => {
            eprintln!("error: NODES must be a number from 1 to 7");
            return ExitCode::from(2);
        }
    };
    let ca_dir = paxlock_certs::default_ca_dir(&out);
    match paxlock_certs::write_dev_pki(&out, &ca_dir, "dev", nodes, &[], &["dev-client"]) {
        Ok(paths) => {
            println!(
                "wrote CA {} (its key: {}) and {nodes} node certificates",
                paths.ca_cert.display(),
                paths.ca_key.display()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
