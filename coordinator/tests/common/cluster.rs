//! Three (or more) real `paxlock serve` processes on loopback, started by
//! the launcher (as `paxlock dev` and the lab start theirs) in a temporary
//! folder, for kill -9 / SIGSTOP / restart tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use paxlock_launcher::{Cluster, ClusterSpec, NodeBinary};

use super::PATIENCE;

pub const PAXLOCK: &str = env!("CARGO_BIN_EXE_paxlock");

/// A cluster of node processes in a temporary folder.
pub struct ProcessCluster {
    /// The nodes; dropped (killed) before the folder goes.
    pub launched: Cluster,
    pub dir: tempfile::TempDir,
    pub nodes: u64,
}

impl ProcessCluster {
    /// Writes certificates and configs, starts every node and waits until
    /// each is ready (the launcher's status check).
    pub fn start(nodes: u64) -> Result<Self, Box<dyn std::error::Error>> {
        Self::start_with(nodes, "")
    }

    /// Like `start`, with `top_level` TOML lines added to every node config.
    pub fn start_with(nodes: u64, top_level: &str) -> Result<Self, Box<dyn std::error::Error>> {
        Self::start_spec(nodes, top_level, |spec| spec)
    }

    /// Like `start`, with the launcher's client (`dev-client`) an
    /// administrator, as `paxlock dev` makes it.
    pub fn start_administered(nodes: u64) -> Result<Self, Box<dyn std::error::Error>> {
        Self::start_spec(nodes, "", |spec| {
            spec.admins(&[paxlock_launcher::DEV_CLIENT])
        })
    }

    /// Like `start_with`, with the launcher's spec adjusted by `adjust`
    /// (administrators, environment).
    pub fn start_spec(
        nodes: u64,
        top_level: &str,
        adjust: impl FnOnce(ClusterSpec) -> ClusterSpec,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let mut cluster = Self::prepare_spec(nodes, top_level, adjust)?;
        let ids: Vec<u64> = (cluster.launched.spec().first_voters())
            .map(|n| n.id)
            .collect();
        for &id in &ids {
            cluster.spawn(id)?;
        }
        cluster.wait_ready(&ids)?;
        Ok(cluster)
    }

    /// Waits until each of `ids` is ready. Callable from synchronous tests
    /// and from inside a runtime alike: the wait runs on a thread (and a
    /// runtime) of its own.
    pub fn wait_ready(&mut self, ids: &[u64]) -> Result<(), Box<dyn std::error::Error>> {
        let launched = &mut self.launched;
        std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    Ok(runtime.block_on(launched.wait_ready(ids, READY_PATIENCE))?)
                })
                .join()
                .map_err(|_| "the readiness wait panicked")?
        })
        .map_err(|e| e.to_string().into())
    }

    /// Writes certificates and configs (as `start_with`) without starting
    /// any node, so a test can set up the folder first (mount something
    /// at a data directory, say); then `spawn` each node.
    pub fn prepare(nodes: u64, top_level: &str) -> Result<Self, Box<dyn std::error::Error>> {
        Self::prepare_spec(nodes, top_level, |spec| spec)
    }

    /// As `prepare`, with the spec adjusted by `adjust` (spares, say).
    pub fn prepare_spec(
        nodes: u64,
        top_level: &str,
        adjust: impl FnOnce(ClusterSpec) -> ClusterSpec,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        // Room for spares (`ClusterSpec::spares`) after the nodes.
        let base_port = paxlock_launcher::ports::free_udp_base(nodes as u16 + 3)
            .ok_or("no free loopback UDP ports")?;
        let spec = adjust(
            ClusterSpec::loopback(dir.path(), nodes, base_port)
                .top_level(top_level)
                .env("PAXLOCK_LOG", Some("info")),
        );
        let launched = Cluster::prepare(NodeBinary::probe(PAXLOCK)?, spec)?;
        Ok(ProcessCluster {
            launched,
            dir,
            nodes,
        })
    }

    /// Issues a client certificate for `identity` from the cluster's CA,
    /// as an operator would (`paxlock certs issue-client`).
    pub fn issue_client(&self, identity: &str) -> Result<(), Box<dyn std::error::Error>> {
        let certs = self.launched.certs_dir();
        let ca = self.launched.ca_dir();
        let issued = Command::new(PAXLOCK)
            .args(["certs", "issue-client", identity, "--ca-cert"])
            .arg(ca.join("ca.pem"))
            .arg("--ca-key")
            .arg(ca.join("ca.key"))
            .arg("--out")
            .arg(&certs)
            .output()?;
        if !issued.status.success() {
            return Err(String::from_utf8_lossy(&issued.stderr).into_owned().into());
        }
        Ok(())
    }

    /// Node `id`'s data directory (as its config names it).
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.launched.data_dir(id)
    }

    /// Node `id`'s process id, while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.launched.pid(id)
    }

    /// A client of this cluster with session TTL `ttl`, patient enough
    /// for a loaded machine.
    pub async fn client(
        &self,
        ttl: std::time::Duration,
    ) -> Result<paxlock::Client, paxlock::Error> {
        let mut config = paxlock::Config::from_file(self.client_config())?;
        config.session_ttl = ttl;
        config.request_timeout = super::PATIENCE;
        paxlock::Client::connect(config).await
    }

    /// Like `client`, acting as `identity` (a certificate the cluster
    /// issued with `issue_client`).
    pub async fn client_as(
        &self,
        identity: &str,
        ttl: std::time::Duration,
    ) -> Result<paxlock::Client, paxlock::Error> {
        let certs = self.launched.certs_dir();
        let mut config = paxlock::Config::from_file(self.client_config())?;
        config.tls.cert = certs.join(format!("client-{identity}.pem"));
        config.tls.key = certs.join(format!("client-{identity}.key"));
        config.session_ttl = ttl;
        config.request_timeout = super::PATIENCE;
        paxlock::Client::connect(config).await
    }

    /// The client config path.
    pub fn client_config(&self) -> PathBuf {
        self.launched.client_config_path()
    }

    /// A raw wire-protocol client of node `id`, with the dev client's
    /// certificate (or `identity`'s, if the cluster issued one).
    pub async fn raw_client(
        &self,
        id: u64,
        identity: &str,
    ) -> Result<super::RawClient, Box<dyn std::error::Error>> {
        let certs = self.launched.certs_dir();
        super::RawClient::connect(
            &certs.join("ca.pem"),
            &certs.join(format!("client-{identity}.pem")),
            &certs.join(format!("client-{identity}.key")),
            &self.addr(id),
        )
        .await
    }

    /// The node that leads, as node 1 (or, if it is down, another) sees it.
    pub async fn leader(&self) -> Result<u64, Box<dyn std::error::Error>> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            for id in 1..=self.nodes {
                if let Ok(status) = super::node_status(self, id).await {
                    if status.leader_node_id != 0 {
                        return Ok(status.leader_node_id);
                    }
                }
            }
            if Instant::now() > deadline {
                return Err("no node knows a leader".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the leader's log records `protocol` (every node speaks
    /// it: from protocol 3 on, sessions belong to identities).
    pub async fn wait_protocol(&self, protocol: u32) -> Result<(), Box<dyn std::error::Error>> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let leader = self.leader().await?;
            if let Ok(status) = super::node_status(self, leader).await {
                if status.cluster_protocol >= protocol {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("the cluster did not record protocol {protocol}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Node `id`'s address (empty for an id the cluster does not have).
    pub fn addr(&self, id: u64) -> String {
        self.launched
            .node(id)
            .map(|n| n.public.to_string())
            .unwrap_or_default()
    }

    /// Sets `key` to `value` (or removes it, for `None`) in the
    /// environment of every node started from now on.
    pub fn set_node_env(&mut self, key: &str, value: Option<&str>) {
        self.launched.set_env(key, value);
    }

    /// Starts node `id` (again); does not wait for it.
    pub fn spawn(&mut self, id: u64) -> Result<(), Box<dyn std::error::Error>> {
        Ok(self.launched.spawn(id)?)
    }

    /// Starts spare node `id` with `serve --join` naming `members`.
    pub fn spawn_asking_to_join(
        &mut self,
        id: u64,
        members: &[String],
    ) -> Result<(), Box<dyn std::error::Error>> {
        Ok(self.launched.spawn_asking_to_join(id, members)?)
    }

    /// Starts node `id` (again) running the `paxlock` binary at `exe` (an
    /// older release, say).
    pub fn spawn_binary(&mut self, id: u64, exe: &Path) -> Result<(), Box<dyn std::error::Error>> {
        Ok(self.launched.spawn_with(id, &NodeBinary::probe(exe)?)?)
    }

    /// Sends `signal` to node `id`'s process.
    pub fn signal(&self, id: u64, signal: rustix::process::Signal) {
        let _ = self.launched.signal(id, signal);
    }

    /// Waits for node `id` to exit by itself; returns its exit code.
    pub fn wait_exit(
        &mut self,
        id: u64,
        patience: Duration,
    ) -> Result<Option<i32>, Box<dyn std::error::Error>> {
        let status = self.launched.wait_exit_blocking(id, patience)?;
        Ok(status.and_then(|s| s.code()))
    }

    /// Closes node `id`'s stdin, as its parent's death would: a node of
    /// this build (started with `--exit-with-parent`) then stops.
    pub fn close_stdin(&mut self, id: u64) {
        self.launched.close_stdin(id);
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill(&mut self, id: u64) {
        self.launched.kill(id);
    }

    /// The last `lines` lines of node `id`'s log (for assertion messages,
    /// which must stay readable).
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let log = self.log(id);
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The node log so far (to search; print `log_tail` instead).
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.launched.log_path(id)).unwrap_or_default()
    }
}

/// How long `start` waits for every node to be ready: the status check
/// needs a leader, which on a loaded machine can take a few elections.
const READY_PATIENCE: Duration = Duration::from_secs(60);

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        self.launched.kill_all();
        // For debugging a failure: keep the folder (logs, data) around.
        if std::env::var_os("PAXLOCK_KEEP_TEST_DIRS").is_some() {
            if let Ok(empty) = tempfile::tempdir() {
                let dir = std::mem::replace(&mut self.dir, empty);
                eprintln!("kept the cluster folder {}", dir.keep().display());
            }
        }
    }
}

/// A free UDP port base with room for `n` consecutive ports.
pub fn free_port_base(n: u16) -> u16 {
    paxlock_launcher::ports::free_udp_base(n).unwrap_or(27101)
}

/// A `paxlock lock` (or other CLI) process whose output lines are collected.
pub struct CliProcess {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl CliProcess {
    /// Starts `paxlock ARGS` with the cluster's client config.
    pub fn start(
        cluster: &ProcessCluster,
        args: &[&str],
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let mut command = Command::new(PAXLOCK);
        command.args(args);
        command.arg("--client-config").arg(cluster.client_config());
        Self::spawn(command)
    }

    /// Starts `paxlock lock NAME FLAGS... -- sh -c CMD` (the config flag
    /// must precede `--`).
    pub fn lock(
        cluster: &ProcessCluster,
        name: &str,
        flags: &[&str],
        cmd: &str,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        Self::running("lock", cluster, name, flags, cmd)
    }

    /// Starts `paxlock elect NAME FLAGS... -- sh -c CMD`.
    pub fn elect(
        cluster: &ProcessCluster,
        name: &str,
        flags: &[&str],
        cmd: &str,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        Self::running("elect", cluster, name, flags, cmd)
    }

    /// `paxlock VERB NAME FLAGS... -- sh -c CMD`.
    fn running(
        verb: &str,
        cluster: &ProcessCluster,
        name: &str,
        flags: &[&str],
        cmd: &str,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let mut command = Command::new(PAXLOCK);
        command.args([verb, name]).args(flags);
        command.arg("--client-config").arg(cluster.client_config());
        command.args(["--", "sh", "-c", cmd]);
        Self::spawn(command)
    }

    fn spawn(mut command: Command) -> Result<Self, Box<dyn std::error::Error>> {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (tx, lines) = mpsc::channel();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Ok(CliProcess {
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// Waits for a line containing `needle`; returns it.
    pub fn wait_for(
        &mut self,
        needle: &str,
        patience: Duration,
    ) -> Result<String, Box<dyn std::error::Error>> {
        let deadline = Instant::now() + patience;
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return Ok(line.clone());
        }
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Err(_) => break,
            }
        }
        Err(format!(
            "no line containing {needle:?} within {patience:?}; saw {:?}",
            self.seen
        )
        .into())
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(
        &mut self,
        patience: Duration,
    ) -> Result<Option<i32>, Box<dyn std::error::Error>> {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = self.child.try_wait()? {
                while let Ok(line) = self.lines.try_recv() {
                    self.seen.push(line);
                }
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "process still running after {patience:?}; saw {:?}",
                    self.seen
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> rustix::process::Pid {
        rustix::process::Pid::from_raw(self.child.id() as i32).unwrap_or(rustix::process::Pid::INIT)
    }
}

impl Drop for CliProcess {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(self.pid(), rustix::process::Signal::CONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `FENCING_TOKEN=N` printed by a lock command.
pub fn token_in(line: &str) -> Option<u64> {
    line.split("token=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Waits until `path` exists (a command under a lock writes it).
pub fn wait_for_file(path: &Path) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
