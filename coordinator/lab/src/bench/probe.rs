//! Server-side figures of a run, read from the members' Prometheus
//! endpoints: how long the disk took to make a batch durable, and (Paxlock)
//! how long a command took from proposal to application. They show where a
//! run's time goes; the contended workload's handoff, for one, cannot be
//! shorter than a commit.

use std::time::Duration;

use anyhow::Context;

/// The histograms to read and the figure each one's mean becomes.
#[derive(Debug, Clone)]
pub struct Probe {
    /// `host:port` of each member's metrics endpoint.
    addrs: Vec<String>,
    /// `(figure, histogram)`: the figure is the histogram's mean in ms over
    /// the run, summed over every member.
    histograms: Vec<(&'static str, &'static str)>,
}

/// Each histogram's `(sum, count)`, summed over the members.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading(Vec<(f64, f64)>);

impl Probe {
    /// Paxlock nodes: persist (WAL write + fdatasync) and commit durations.
    pub fn paxlock(addrs: Vec<String>) -> Probe {
        Probe {
            addrs,
            histograms: vec![
                ("sync_mean_ms", "paxlock_persist_duration_seconds"),
                ("commit_mean_ms", "paxlock_commit_duration_seconds"),
            ],
        }
    }

    /// etcd members: WAL fsync durations (etcd times the fsync alone).
    pub fn etcd(addrs: Vec<String>) -> Probe {
        Probe {
            addrs,
            histograms: vec![("sync_mean_ms", "etcd_disk_wal_fsync_duration_seconds")],
        }
    }

    /// Reads every histogram from every member; an unreachable member or
    /// a missing histogram fails the reading (the figures are then left out,
    /// not guessed).
    pub async fn read(&self) -> anyhow::Result<Reading> {
        let mut totals = vec![(0.0, 0.0); self.histograms.len()];
        for addr in &self.addrs {
            let text = fetch_metrics(addr).await?;
            for ((_, histogram), total) in self.histograms.iter().zip(&mut totals) {
                total.0 += value(&text, &format!("{histogram}_sum"))
                    .with_context(|| format!("{histogram}_sum not in {addr}/metrics"))?;
                total.1 += value(&text, &format!("{histogram}_count"))
                    .with_context(|| format!("{histogram}_count not in {addr}/metrics"))?;
            }
        }
        Ok(Reading(totals))
    }

    /// The mean of each histogram between two readings, in ms; histograms
    /// with no observation in between are left out.
    pub fn figures(&self, before: &Reading, after: &Reading) -> Vec<(&'static str, f64)> {
        self.histograms
            .iter()
            .zip(before.0.iter().zip(&after.0))
            .filter_map(|((figure, _), (b, a))| {
                let count = a.1 - b.1;
                (count > 0.0).then(|| (*figure, (a.0 - b.0) / count * 1000.0))
            })
            .collect()
    }
}

/// The Prometheus text of `addr`'s `/metrics`.
pub async fn fetch_metrics(addr: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut text = String::new();
        s.read_to_string(&mut text).await?;
        anyhow::Ok(text)
    };
    tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .with_context(|| format!("{addr}/metrics timed out"))?
}

/// The value of the unlabelled sample `name` in a Prometheus text.
pub fn value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (metric, value) = line.split_once(' ')?;
        (metric == name).then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x_seconds help\n# TYPE x_seconds histogram\n\
        x_seconds_bucket{le=\"0.001\"} 3\nx_seconds_sum 0.004\nx_seconds_count 4\n\
        x_seconds_sum_other 9\n";

    #[test]
    fn a_sample_is_found_by_its_whole_name() {
        assert_eq!(value(TEXT, "x_seconds_sum"), Some(0.004));
        assert_eq!(value(TEXT, "x_seconds_count"), Some(4.0));
        assert_eq!(value(TEXT, "x_seconds"), None);
        assert_eq!(value(TEXT, "y_seconds_sum"), None);
    }

    #[test]
    fn figures_are_the_mean_between_readings_and_skip_idle_histograms() {
        let probe = Probe::paxlock(Vec::new());
        let before = Reading(vec![(1.0, 10.0), (2.0, 5.0)]);
        let after = Reading(vec![(1.5, 1010.0), (2.0, 5.0)]);
        let figures = probe.figures(&before, &after);
        assert_eq!(figures.len(), 1);
        assert_eq!(figures[0].0, "sync_mean_ms");
        assert!((figures[0].1 - 0.5).abs() < 1e-9, "{figures:?}");
    }
}
