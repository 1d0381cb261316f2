//! `paxlock elect NAME VALUE`, `paxlock elect NAME [VALUE] -- CMD` (run a
//! command while leader, the twin of `paxlock lock`), and `paxlock observe
//! NAME` (also spelled `paxlock elect --watch NAME`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use super::signals::{spawn_in_group, supervise, Ended, Shutdown};

/// Exit code when leadership was lost.
pub const EXIT_LEADERSHIP_LOST: u8 = 4;

/// Options of `paxlock elect`.
#[derive(Debug, Args)]
pub struct ElectArgs {
    /// The election's name.
    pub name: String,
    /// The value to publish while leading (e.g. this instance's address).
    pub value: Option<String>,
    /// Print one line per leadership change instead of campaigning.
    #[arg(long)]
    pub watch: bool,
    /// Session TTL while campaigning.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Time between SIGTERM and SIGKILL when the command must stop.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// The client config file.
    #[arg(long, default_value = ".paxlock-dev/client.toml")]
    pub client_config: PathBuf,
    /// A command to run while leader (term in PAXLOCK_TERM, the
    /// leadership's fencing token in PAXLOCK_FENCING_TOKEN), stopped if
    /// leadership is lost; leadership is resigned when it exits, and
    /// `paxlock` exits with its code.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// Campaigns and holds leadership until Ctrl-C, or watches.
pub async fn run(args: ElectArgs) -> anyhow::Result<ExitCode> {
    let mut config = paxlock::Config::from_file(&args.client_config)?;
    config.session_ttl = args.ttl;
    let client = paxlock::Client::connect(config)
        .await
        .context("connecting to the cluster")?;
    let mut shutdown = Shutdown::install()?;
    if args.watch {
        return print_changes(client, &args.name, &mut shutdown).await;
    }
    let value = match (args.value, args.command.is_empty()) {
        (Some(value), _) => value,
        // A command is what leads: the value is optional then.
        (None, false) => String::new(),
        (None, true) => bail!("give a VALUE to campaign with, a command after --, or --watch"),
    };
    let election = client.election(args.name.clone());
    let leadership = tokio::select! {
        leadership = election.campaign(value.clone().into_bytes()) => leadership?,
        _ = shutdown.recv() => {
            let _ = client.close().await;
            return Ok(ExitCode::SUCCESS);
        }
    };
    // 0 stands for none, as on the wire: a win before protocol 3.
    let token = leadership.fencing_token().unwrap_or(0);
    println!(
        "elected: {} term={} fencing_token={token} value={value}",
        args.name,
        leadership.term()
    );
    if !args.command.is_empty() {
        let env = [
            ("PAXLOCK_ELECTION", args.name.clone()),
            ("PAXLOCK_TERM", leadership.term().to_string()),
            ("PAXLOCK_FENCING_TOKEN", token.to_string()),
            ("PAXLOCK_LEADER_VALUE", value),
        ];
        let mut child = spawn_in_group(&args.command, &env)?;
        let what = format!("leadership of {:?} (term {})", args.name, leadership.term());
        let code = match supervise(&mut child, leadership.lost(), args.grace, &what).await? {
            Ended::Exited(code) | Ended::Stopped(code) => {
                let _ = leadership.resign().await;
                code
            }
            Ended::Lost => ExitCode::from(EXIT_LEADERSHIP_LOST),
        };
        let _ = client.close().await;
        return Ok(code);
    }
    let code = tokio::select! {
        _ = leadership.lost() => {
            eprintln!("paxlock: leadership of {:?} lost", args.name);
            ExitCode::from(EXIT_LEADERSHIP_LOST)
        }
        _ = shutdown.recv() => {
            let _ = leadership.resign().await;
            println!("resigned: {}", args.name);
            ExitCode::SUCCESS
        }
    };
    let _ = client.close().await;
    Ok(code)
}

/// `paxlock observe NAME`: prints one line per leadership change of
/// election `name` until Ctrl-C, without campaigning.
pub async fn observe(name: &str, client_config: &Path) -> anyhow::Result<ExitCode> {
    let config = paxlock::Config::from_file(client_config)?;
    let client = paxlock::Client::connect(config)
        .await
        .context("connecting to the cluster")?;
    let mut shutdown = Shutdown::install()?;
    print_changes(client, name, &mut shutdown).await
}

async fn print_changes(
    client: paxlock::Client,
    name: &str,
    shutdown: &mut Shutdown,
) -> anyhow::Result<ExitCode> {
    let mut watch = client.election(name.to_string()).watch();
    loop {
        tokio::select! {
            event = watch.next() => println!("{}", describe(&event?)),
            _ = shutdown.recv() => break,
        }
    }
    let _ = client.close().await;
    Ok(ExitCode::SUCCESS)
}

/// One line per event, stable enough for scripts: `term=N kind
/// [identity=I] [fencing_token=T] value=V` (the value last: it may hold
/// spaces; the identity is the leader's certificate name, left out when
/// the session has none; the token is left out for a leadership won
/// before protocol 3).
pub fn describe(event: &paxlock::LeaderEvent) -> String {
    use paxlock::LeaderEvent as E;
    let leader = |term: &u64, kind: &str, value: &[u8], identity: &str, token: &Option<u64>| {
        format!(
            "term={term} {kind} {}{}value={}",
            identity_field(identity),
            token.map_or(String::new(), |t| format!("fencing_token={t} ")),
            String::from_utf8_lossy(value)
        )
    };
    match event {
        E::Elected {
            term,
            value,
            identity,
            fencing_token,
        } => leader(term, "elected", value, identity, fencing_token),
        E::ValueChanged {
            term,
            value,
            identity,
            fencing_token,
        } => leader(term, "value-changed", value, identity, fencing_token),
        E::NoLeader { term } => format!("term={term} no-leader"),
        E::HistoryGone => "history-gone (some events were missed)".to_string(),
    }
}

fn identity_field(identity: &str) -> String {
    if identity.is_empty() {
        String::new()
    } else {
        format!("identity={identity} ")
    }
}
