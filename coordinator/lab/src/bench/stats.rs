//! Latency samples, percentiles and host CPU accounting.

use std::time::Duration;

/// Latency samples in nanoseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples(pub Vec<u64>);

impl Samples {
    /// Adds one sample.
    pub fn push(&mut self, d: Duration) {
        self.0.push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Appends all of `other`.
    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    /// Sorts in place; call before `quantile`.
    pub fn sort(&mut self) {
        self.0.sort_unstable();
    }

    /// The `q` quantile (0..=1) in microseconds, of sorted samples.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let idx = ((self.0.len() as f64 - 1.0) * q).round() as usize;
        self.0[idx.min(self.0.len() - 1)] as f64 / 1000.0
    }

    /// The largest sample in microseconds.
    pub fn max_us(&self) -> f64 {
        self.0.iter().max().map_or(f64::NAN, |&m| m as f64 / 1000.0)
    }
}

/// A run's main latency distribution, kept whole for `--plot`.
#[derive(Debug, Clone)]
pub struct Latency {
    /// What was timed (`acquire`, `handoff`), for the chart's legend.
    pub what: &'static str,
    /// The samples, sorted.
    pub samples: Samples,
}

/// Host CPU counters from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuTimes {
    /// Reads `/proc/stat` now; zeros if unavailable.
    pub fn now() -> CpuTimes {
        let Ok(text) = std::fs::read_to_string("/proc/stat") else {
            return CpuTimes::default();
        };
        let Some(line) = text.lines().next() else {
            return CpuTimes::default();
        };
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest* already in user)
        let total: u64 = fields.iter().take(8).sum();
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        CpuTimes {
            busy: total.saturating_sub(idle),
            total,
        }
    }

    /// Busy percentage of all cores between `self` (earlier) and `later`.
    pub fn busy_pct_until(&self, later: &CpuTimes) -> f64 {
        let total = later.total.saturating_sub(self.total);
        if total == 0 {
            return f64::NAN;
        }
        100.0 * later.busy.saturating_sub(self.busy) as f64 / total as f64
    }
}

/// CPU time and resident memory of one process, from `/proc/PID/stat`
/// and `/proc/PID/status`.
#[derive(Debug, Clone, Copy)]
pub struct ProcessUsage {
    /// User and system CPU seconds so far.
    pub cpu_secs: f64,
    /// Resident memory in bytes.
    pub rss_bytes: u64,
}

impl ProcessUsage {
    /// Reads process `pid` now; `None` if it is gone.
    pub fn read(pid: u32) -> Option<ProcessUsage> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Self::parse(&stat, &status, rustix::param::clock_ticks_per_second())
    }

    fn parse(stat: &str, status: &str, ticks_per_second: u64) -> Option<ProcessUsage> {
        // The command name (field 2) may hold spaces and parentheses: the
        // fields are counted from after its last ')', where field 3 (the
        // state) is first, so utime (14) and stime (15) are 11th and 12th.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let rss_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(ProcessUsage {
            cpu_secs: ticks as f64 / ticks_per_second.max(1) as f64,
            rss_bytes: rss_kib * 1024,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_usage_is_read_past_a_command_name_with_spaces() {
        let stat = "4242 (paxlock (x) y) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 50 0 0 20 0";
        let status = "Name:\tpaxlock\nVmRSS:\t  204800 kB\nThreads:\t3\n";
        let usage = ProcessUsage::parse(stat, status, 100);
        let usage = usage.map(|u| (u.cpu_secs, u.rss_bytes));
        assert_eq!(usage, Some((3.0, 200 * 1024 * 1024)));
        assert!(ProcessUsage::parse("4242 (x) S", status, 100).is_none());
    }

    #[test]
    fn this_process_is_readable() {
        let usage = ProcessUsage::read(std::process::id());
        assert!(usage.is_some_and(|u| u.rss_bytes > 0), "{usage:?}");
    }
}
