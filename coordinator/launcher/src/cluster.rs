//! A launched cluster: writes its folder, starts, signals, kills and stops
//! its `paxlock serve` processes, and decides readiness one way, by asking
//! every node for its status.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use paxlock::proto::StatusOk;
use paxlock::tls::TlsMaterial;
use rustix::process::Signal;

use crate::binary::NodeBinary;
use crate::process::{self, Supervised};
use crate::spec::{ClusterSpec, LogSink, NodeSpec};
use crate::LaunchError;

/// How long one status request may take while waiting for readiness.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// How often readiness is asked again.
const READY_POLL: Duration = Duration::from_millis(50);

/// One node's process, when it runs.
#[derive(Debug, Default)]
struct NodeState {
    process: Option<Supervised>,
    paused: bool,
}

/// A cluster of `paxlock serve` processes in one folder. Dropping it kills
/// every node; nodes of a binary that supports `--exit-with-parent` also
/// die with the process that launched them, however it dies.
#[derive(Debug)]
pub struct Cluster {
    spec: ClusterSpec,
    binary: NodeBinary,
    tls: TlsMaterial,
    nodes: BTreeMap<u64, NodeState>,
}

impl Cluster {
    /// Writes certificates, node configs, data folders and `client.toml`
    /// into the spec's folder, starting no node.
    pub fn prepare(binary: NodeBinary, spec: ClusterSpec) -> Result<Cluster, LaunchError> {
        spec.check()?;
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LaunchError::Write { path, source }
        };
        let certs = spec.dir.join("certs");
        let sans: Vec<(u64, Vec<String>)> = spec
            .nodes
            .iter()
            .map(|n| (n.id, n.extra_sans.clone()))
            .collect();
        let clients: Vec<&str> = spec.clients.iter().map(String::as_str).collect();
        let ca_dir = spec.dir.join("ca");
        let pki = paxlock_certs::write_pki(&certs, &ca_dir, &spec.cluster_id, &sans, &clients)
            .map_err(|source| LaunchError::Certs {
                path: certs.clone(),
                source,
            })?;
        for node in &spec.nodes {
            let data = spec.dir.join("data").join(format!("node-{}", node.id));
            std::fs::create_dir_all(&data).map_err(write_err(&data))?;
            let config = config_path(&spec.dir, node.id);
            std::fs::write(&config, spec.node_config(node)).map_err(write_err(&config))?;
        }
        let client = spec.dir.join("client.toml");
        std::fs::write(&client, spec.client_config()).map_err(write_err(&client))?;
        let (_, cert, key) = pki.clients.first().ok_or(LaunchError::NoClient)?;
        let tls = TlsMaterial::load(&pki.ca_cert, cert, key).map_err(LaunchError::Certificate)?;
        let nodes = spec
            .nodes
            .iter()
            .map(|n| (n.id, NodeState::default()))
            .collect();
        Ok(Cluster {
            spec,
            binary,
            tls,
            nodes,
        })
    }

    /// Prepares the folder, starts every node and waits (up to the spec's
    /// startup timeout) until every one is ready.
    pub async fn start(binary: NodeBinary, spec: ClusterSpec) -> Result<Cluster, LaunchError> {
        let mut cluster = Cluster::prepare(binary, spec)?;
        let ids: Vec<u64> = cluster.spec.first_voters().map(|n| n.id).collect();
        for &id in &ids {
            cluster.spawn(id)?;
        }
        cluster
            .wait_ready(&ids, cluster.spec.startup_timeout)
            .await?;
        Ok(cluster)
    }

    /// What it was launched from.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// The binary nodes run unless started with another.
    pub fn binary(&self) -> &NodeBinary {
        &self.binary
    }

    /// Every node id, in order.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Node `id`'s spec (addresses, wrapper).
    pub fn node(&self, id: u64) -> Result<&NodeSpec, LaunchError> {
        self.spec.node(id).ok_or(LaunchError::NoSuchNode(id))
    }

    /// The cluster folder.
    pub fn dir(&self) -> &Path {
        &self.spec.dir
    }

    /// The certificates folder (`ca.pem`, `node-N.pem`, `client-NAME.pem`).
    pub fn certs_dir(&self) -> PathBuf {
        self.spec.dir.join("certs")
    }

    /// The folder of the CA's key and certificate (`ca.key`, `ca.pem`),
    /// apart from the nodes' certificates: what issuing another client
    /// certificate needs.
    pub fn ca_dir(&self) -> PathBuf {
        self.spec.dir.join("ca")
    }

    /// Node `id`'s config file.
    pub fn config_path(&self, id: u64) -> PathBuf {
        config_path(&self.spec.dir, id)
    }

    /// Node `id`'s data folder.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.spec.dir.join("data").join(format!("node-{id}"))
    }

    /// Where node `id`'s output goes with [`LogSink::Files`].
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.spec.dir.join(format!("node-{id}.log"))
    }

    /// The client config (every node's public address, the first client
    /// identity).
    pub fn client_config_path(&self) -> PathBuf {
        self.spec.dir.join("client.toml")
    }

    /// The first client identity's TLS material (the launcher's own).
    pub fn tls(&self) -> &TlsMaterial {
        &self.tls
    }

    /// Every first voter's public address, as clients are configured to
    /// reach the cluster (spares are not among them).
    pub fn endpoints(&self) -> Vec<String> {
        self.spec
            .first_voters()
            .map(|n| n.public.to_string())
            .collect()
    }

    /// Sets (`Some`) or removes (`None`) an environment variable for every
    /// node started from now on.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.spec.env.retain(|(k, _)| k != key);
        self.spec
            .env
            .push((key.to_string(), value.map(str::to_string)));
    }

    /// Sets the runtime threads of every node started from now on (`None`:
    /// the node's default, one per core).
    pub fn set_worker_threads(&mut self, threads: Option<u16>) {
        self.spec.worker_threads = threads;
    }

    /// Starts node `id` (again, on its data folder) with the cluster's
    /// binary; does not wait for it.
    pub fn spawn(&mut self, id: u64) -> Result<(), LaunchError> {
        let binary = self.binary.clone();
        self.spawn_with(id, &binary)
    }

    /// Starts node `id` running `binary` (an older release, say).
    pub fn spawn_with(&mut self, id: u64, binary: &NodeBinary) -> Result<(), LaunchError> {
        self.spawn_with_args(id, binary, &[])
    }

    /// Starts spare node `id` with `serve --join MEMBER` for each of
    /// `members` (`host:port`): it asks them to add it as a voter.
    pub fn spawn_asking_to_join(&mut self, id: u64, members: &[String]) -> Result<(), LaunchError> {
        let binary = self.binary.clone();
        let args: Vec<&str> = members.iter().flat_map(|m| ["--join", m]).collect();
        self.spawn_with_args(id, &binary, &args)
    }

    fn spawn_with_args(
        &mut self,
        id: u64,
        binary: &NodeBinary,
        extra_args: &[&str],
    ) -> Result<(), LaunchError> {
        let node = self.node(id)?.clone();
        if self.is_running(id) {
            return Err(LaunchError::AlreadyRunning(id));
        }
        let mut command = match node.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary.path());
                command
            }
            None => Command::new(binary.path()),
        };
        command
            .arg("serve")
            .arg("--config")
            .arg(self.config_path(id))
            .args(extra_args)
            .current_dir(&self.spec.dir)
            .stdin(Stdio::null());
        if let (Some(threads), true) = (self.spec.worker_threads, binary.takes_worker_threads()) {
            command.args(["--worker-threads", &threads.to_string()]);
        }
        if binary.exits_with_parent() {
            // Its stdin is a pipe whose other end only this process holds
            // (in the `Child`): the node stops when it closes, which a
            // SIGKILL of this process does too.
            command.arg("--exit-with-parent").stdin(Stdio::piped());
        }
        for (key, value) in &self.spec.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        let process = Supervised::spawn(command, &self.spec.logs, &self.log_path(id), id).map_err(
            |source| LaunchError::Spawn {
                id,
                path: binary.path().to_path_buf(),
                source,
            },
        )?;
        tracing::debug!(node = id, pid = process.pid(), "started");
        let state = self.nodes.entry(id).or_default();
        state.process = Some(process);
        state.paused = false;
        Ok(())
    }

    /// Whether node `id` runs (it may be paused).
    pub fn is_running(&self, id: u64) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.process.is_some())
    }

    /// Whether node `id` is stopped by [`Cluster::pause`].
    pub fn is_paused(&self, id: u64) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.paused)
    }

    /// Node `id`'s process id, while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.process(id).map(Supervised::pid)
    }

    fn process(&self, id: u64) -> Option<&Supervised> {
        self.nodes.get(&id)?.process.as_ref()
    }

    /// Sends `signal` to node `id` (nothing if it does not run).
    pub fn signal(&self, id: u64, signal: Signal) -> Result<(), LaunchError> {
        match self.process(id) {
            Some(process) => process
                .signal(signal)
                .map_err(|source| LaunchError::Signal { id, source }),
            None => Ok(()),
        }
    }

    /// SIGSTOPs node `id`, as a stalled machine or a long GC pause would.
    pub fn pause(&mut self, id: u64) -> Result<(), LaunchError> {
        self.signal(id, Signal::STOP)?;
        if let Some(state) = self.nodes.get_mut(&id) {
            state.paused = state.process.is_some();
        }
        Ok(())
    }

    /// SIGCONTs node `id`.
    pub fn resume(&mut self, id: u64) -> Result<(), LaunchError> {
        self.signal(id, Signal::CONT)?;
        if let Some(state) = self.nodes.get_mut(&id) {
            state.paused = false;
        }
        Ok(())
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill(&mut self, id: u64) {
        if let Some(state) = self.nodes.get_mut(&id) {
            if let Some(mut process) = state.process.take() {
                process.kill();
            }
            state.paused = false;
        }
    }

    /// SIGKILLs every node at once (as a power cut would), then reaps them.
    pub fn kill_all(&mut self) {
        for state in self.nodes.values() {
            if let Some(process) = &state.process {
                let _ = process.signal(Signal::KILL);
            }
        }
        for id in self.ids() {
            self.kill(id);
        }
    }

    /// Closes node `id`'s stdin, as its launcher's death would: a node
    /// started with `--exit-with-parent` then stops.
    pub fn close_stdin(&mut self, id: u64) {
        if let Some(process) = self.nodes.get_mut(&id).and_then(|n| n.process.as_mut()) {
            process.close_stdin();
        }
    }

    /// Waits up to `patience` (blocking the thread) for node `id` to exit
    /// by itself, and reaps it; `None` if it was not running.
    pub fn wait_exit_blocking(
        &mut self,
        id: u64,
        patience: Duration,
    ) -> Result<Option<ExitStatus>, LaunchError> {
        let Some(state) = self.nodes.get_mut(&id) else {
            return Err(LaunchError::NoSuchNode(id));
        };
        let Some(process) = state.process.as_mut() else {
            return Ok(None);
        };
        match process.wait_blocking(patience) {
            Ok(Some(status)) => {
                state.process = None;
                state.paused = false;
                Ok(Some(status))
            }
            Ok(None) => Err(LaunchError::StillRunning { id, patience }),
            Err(source) => Err(LaunchError::Signal { id, source }),
        }
    }

    /// Asks node `id` directly (at its listen address, past any fault
    /// proxy) for its view of the cluster.
    pub async fn status(&self, id: u64, timeout: Duration) -> Result<StatusOk, LaunchError> {
        let addr = self.node(id)?.listen.to_string();
        paxlock::admin::node_status(&self.tls, &addr, timeout)
            .await
            .map_err(LaunchError::Status)
    }

    /// A running, unpaused node that says it leads, asked directly.
    pub async fn leader(&self) -> Option<u64> {
        for id in self.ids() {
            if !self.is_running(id) || self.is_paused(id) {
                continue;
            }
            if let Ok(status) = self.status(id, STATUS_TIMEOUT).await {
                if status.node_id != 0 && status.leader_node_id == status.node_id {
                    return Some(id);
                }
            }
        }
        None
    }

    /// Waits until each of `ids` is ready: it answers the status request,
    /// knows a leader, and is connected to every peer that runs and is not
    /// paused. Fails at
    /// once if one of them exits, and after `timeout` with the reason the
    /// last status gave.
    pub async fn wait_ready(&mut self, ids: &[u64], timeout: Duration) -> Result<(), LaunchError> {
        let deadline = Instant::now() + timeout;
        let mut waiting: Vec<u64> = ids.to_vec();
        let mut last: BTreeMap<u64, String> = BTreeMap::new();
        while !waiting.is_empty() {
            for id in waiting.clone() {
                self.check_alive(id)?;
                match self.readiness(id).await {
                    Ok(()) => {
                        tracing::debug!(node = id, "ready");
                        waiting.retain(|&w| w != id);
                    }
                    Err(why) => {
                        last.insert(id, why);
                    }
                }
            }
            if waiting.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let id = waiting[0];
                return Err(LaunchError::NotReady {
                    id,
                    timeout,
                    last: last.remove(&id).unwrap_or_default(),
                    log: self.log_hint(id),
                });
            }
            tokio::time::sleep(READY_POLL).await;
        }
        Ok(())
    }

    /// `Ok` if node `id` is ready, else what it lacks.
    async fn readiness(&self, id: u64) -> Result<(), String> {
        let status = self
            .status(id, STATUS_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        if status.leader_node_id == 0 {
            return Err("it knows no leader".into());
        }
        let disconnected: Vec<u64> = status
            .peers
            .iter()
            .filter(|p| !p.connected && self.is_running(p.node_id) && !self.is_paused(p.node_id))
            .map(|p| p.node_id)
            .collect();
        if !disconnected.is_empty() {
            return Err(format!("it is not connected to nodes {disconnected:?}"));
        }
        Ok(())
    }

    /// An error if node `id` was never started or has exited (reaping it).
    fn check_alive(&mut self, id: u64) -> Result<(), LaunchError> {
        let log = self.log_hint(id);
        let state = self.nodes.get_mut(&id).ok_or(LaunchError::NoSuchNode(id))?;
        let Some(process) = state.process.as_mut() else {
            return Err(LaunchError::NotStarted(id));
        };
        match process.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                state.process = None;
                Err(LaunchError::Exited { id, status, log })
            }
            Err(source) => Err(LaunchError::Signal { id, source }),
        }
    }

    /// Where to look for node `id`'s output.
    fn log_hint(&self, id: u64) -> String {
        match self.spec.logs {
            LogSink::Files => self.log_path(id).display().to_string(),
            LogSink::Lines(_) => "its output".into(),
        }
    }

    /// Stops every node: SIGTERM to all at once, up to `grace` to exit,
    /// then SIGKILL.
    pub async fn stop(&mut self, grace: Duration) {
        let processes = self.nodes.values_mut().filter_map(|n| n.process.as_mut());
        process::stop_all(processes, grace).await;
        for state in self.nodes.values_mut() {
            state.process = None;
            state.paused = false;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn config_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node-{id}.toml"))
}
