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
