//! Signal plumbing shared by the commands that supervise a child or wait
//! for Ctrl-C / SIGTERM (node processes are the launcher's:
//! `paxlock_launcher::process`).

use std::process::{ExitCode, ExitStatus};
use std::time::Duration;

use anyhow::Context;
use tokio::process::Child;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Resolves on SIGTERM, SIGINT or SIGHUP: a supervisor stopping us, Ctrl-C,
/// or the terminal going away. Each would end the process anyway; caught,
/// the command first stops what it started.
#[derive(Debug)]
pub struct Shutdown {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Shutdown {
    /// Installs the handlers.
    pub fn install() -> anyhow::Result<Self> {
        Ok(Shutdown {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// Waits for the next SIGTERM, SIGINT or SIGHUP.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}

/// Sends SIGTERM to the child's process group, waits up to `grace`, then
/// SIGKILLs the group; returns how the child ended. The child must have
/// been spawned in its own group (`process_group(0)`), so that a shell
/// wrapper and everything it started stop together.
pub async fn terminate_then_kill(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    let group = child
        .id()
        .and_then(|pid| rustix::process::Pid::from_raw(pid as i32));
    if let Some(group) = group {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::TERM);
    }
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            let _ = child.kill().await;
            child.wait().await.ok()
        }
    };
    // Whatever the command left behind in its group goes too.
    if let Some(group) = group {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
    status
}

/// The exit code a shell would report for `status` (128 + signal if killed).
pub fn exit_code_of(status: ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code.clamp(0, 255) as u8),
        (None, Some(sig)) => ExitCode::from((128 + sig).clamp(0, 255) as u8),
        _ => ExitCode::FAILURE,
    }
}

/// How a command run while something is held ended (see [`supervise`]).
#[derive(Debug)]
pub enum Ended {
    /// It exited by itself, with this code: give up what was held.
    Exited(ExitCode),
    /// What was held was lost; the command was stopped.
    Lost,
    /// A signal asked us to stop; the command was stopped, with this
    /// code: give up what was held.
    Stopped(ExitCode),
}

/// Starts `command` (program and arguments) with `env`, in a process group
/// of its own so that stopping it stops everything it started.
pub fn spawn_in_group(command: &[String], env: &[(&str, String)]) -> anyhow::Result<Child> {
    let (program, rest) = command.split_first().context("no command given")?;
    let mut spawn = tokio::process::Command::new(program);
    spawn.args(rest).process_group(0);
    for (key, value) in env {
        spawn.env(key, value);
    }
    spawn.spawn().with_context(|| format!("starting {program}"))
}

/// Runs `child` until it exits, `lost` resolves (then it is stopped,
/// SIGTERM then SIGKILL after `grace`, before this returns, so it is gone
/// before anyone else can be granted what was lost), or a signal asks us
/// to stop (it is stopped the same way). `what` names what is held, for
/// the message printed on loss.
pub async fn supervise(
    child: &mut Child,
    lost: impl std::future::Future<Output = ()>,
    grace: Duration,
    what: &str,
) -> anyhow::Result<Ended> {
    let mut shutdown = Shutdown::install()?;
    tokio::select! {
        status = child.wait() => {
            let status = status.context("waiting for the command")?;
            Ok(Ended::Exited(exit_code_of(status)))
        }
        () = lost => {
            eprintln!("paxlock: {what} lost; stopping the command");
            terminate_then_kill(child, grace).await;
            Ok(Ended::Lost)
        }
        () = shutdown.recv() => {
            let status = terminate_then_kill(child, grace).await;
            Ok(Ended::Stopped(status.map(exit_code_of).unwrap_or(ExitCode::FAILURE)))
        }
    }
}
