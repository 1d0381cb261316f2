//! Supervised child processes: started with their output sent to a log
//! sink, signalled, and stopped politely then firmly. Used for Paxlock
//! nodes and for the lab's peers (etcd members) alike.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::spec::{LogSink, NodeLine};

/// How often waits look at a child again.
const POLL: Duration = Duration::from_millis(20);

/// A started child process.
#[derive(Debug)]
pub struct Supervised {
    child: Child,
}

impl Supervised {
    /// Starts `command` with stdout and stderr going to `sink` (for
    /// [`LogSink::Files`], appended to `log_file`); `tag` names it in
    /// [`NodeLine`]s. Stdin is left as the command set it.
    pub fn spawn(
        mut command: Command,
        sink: &LogSink,
        log_file: &Path,
        tag: u64,
    ) -> std::io::Result<Supervised> {
        match sink {
            LogSink::Files => {
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log_file)?;
                command.stdout(log.try_clone()?).stderr(log);
                Ok(Supervised {
                    child: command.spawn()?,
                })
            }
            LogSink::Lines(lines) => {
                command.stdout(Stdio::piped()).stderr(Stdio::piped());
                let mut child = command.spawn()?;
                let streams: [Option<Box<dyn Read + Send>>; 2] = [
                    child
                        .stdout
                        .take()
                        .map(|s| Box::new(s) as Box<dyn Read + Send>),
                    child
                        .stderr
                        .take()
                        .map(|s| Box::new(s) as Box<dyn Read + Send>),
                ];
                for stream in streams.into_iter().flatten() {
                    let lines = lines.clone();
                    // A plain thread: the sink works with or without a
                    // runtime, and blocking on a full channel holds only
                    // this reader.
                    std::thread::spawn(move || {
                        for line in BufReader::new(stream).lines().map_while(Result::ok) {
                            if lines.blocking_send(NodeLine { node: tag, line }).is_err() {
                                return;
                            }
                        }
                    });
                }
                Ok(Supervised { child })
            }
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (ignored if it has exited and been reaped).
    pub fn signal(&self, signal: Signal) -> std::io::Result<()> {
        match Pid::from_raw(self.child.id() as i32) {
            Some(pid) => rustix::process::kill_process(pid, signal).map_err(std::io::Error::from),
            None => Ok(()),
        }
    }

    /// Closes its stdin (a no-op unless it was piped): a node started with
    /// `--exit-with-parent` takes that as its launcher's death.
    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// How it ended, if it has.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Waits up to `patience` for it to end by itself.
    pub async fn wait_for(&mut self, patience: Duration) -> std::io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(outcome) = self.ended_by(deadline)? {
                return Ok(outcome);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Like [`Supervised::wait_for`], blocking the thread.
    pub fn wait_blocking(&mut self, patience: Duration) -> std::io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(outcome) = self.ended_by(deadline)? {
                return Ok(outcome);
            }
            std::thread::sleep(POLL);
        }
    }

    /// One look of a wait until `deadline`: `Some(Some(status))` if it has
    /// ended, `Some(None)` if the deadline has passed, `None` to look again.
    fn ended_by(&mut self, deadline: Instant) -> std::io::Result<Option<Option<ExitStatus>>> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(Some(Some(status)));
        }
        Ok((Instant::now() >= deadline).then_some(None))
    }

    /// SIGKILLs it (continuing it first, should it be stopped) and reaps
    /// it. A killed process ends at once, so the wait is short.
    pub fn kill(&mut self) {
        let _ = self.signal(Signal::CONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// Asks every process to stop (SIGTERM to all at once, continuing stopped
/// ones), gives them up to `grace` together, then kills the ones that
/// linger.
pub async fn stop_all<'a>(
    processes: impl IntoIterator<Item = &'a mut Supervised>,
    grace: Duration,
) {
    let mut processes: Vec<&mut Supervised> = processes.into_iter().collect();
    for process in &processes {
        let _ = process.signal(Signal::TERM);
        let _ = process.signal(Signal::CONT);
    }
    let deadline = Instant::now() + grace;
    for process in &mut processes {
        let left = deadline.saturating_duration_since(Instant::now());
        if !matches!(process.wait_for(left).await, Ok(Some(_))) {
            process.kill();
        }
    }
}
