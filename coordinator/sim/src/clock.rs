//! Per-node clocks: offset and rate error against the simulator's true time.

/// `local(t) = offset + t + t * drift_ppm / 1e6`, with `|drift_ppm|` within
/// the configured bound. Monotonic in `t`.
#[derive(Debug, Clone, Copy)]
pub struct ClockModel {
    /// Local reading at true time zero.
    pub offset_ns: u64,
    /// Rate error in parts per million (may be negative).
    pub drift_ppm: i64,
}

impl ClockModel {
    /// The node's local reading at true time `true_ns`.
    pub fn local(&self, true_ns: u64) -> u64 {
        let t = i128::from(true_ns);
        let l = i128::from(self.offset_ns) + t + t * i128::from(self.drift_ppm) / 1_000_000;
        l.max(0) as u64
    }

    /// The first true time at which the local clock reads at least `local_ns`.
    pub fn true_at(&self, local_ns: u64) -> u64 {
        let rel = i128::from(local_ns) - i128::from(self.offset_ns);
        if rel <= 0 {
            return 0;
        }
        let mut t = (rel * 1_000_000 / (1_000_000 + i128::from(self.drift_ppm))).max(0) as u64;
        // Fix rounding so that `t` is exactly the first instant reaching it.
        while self.local(t) < local_ns {
            t += 1;
        }
        while t > 0 && self.local(t - 1) >= local_ns {
            t -= 1;
        }
        t
    }
}
