//! The client lease rule: until when may a client believe its session (and
//! so its locks and leaderships) is still alive? Pure, std only.
//!
//! # Model
//!
//! True time is `t`. Every clock `C` (the client's, each leader's) is
//! monotonic with rate within the drift bound ρ:
//! `(1 − ρ)·Δt ≤ ΔC ≤ (1 + ρ)·Δt` for every true interval `Δt`.
//!
//! # Derivation
//!
//! The client sends a keepalive at true time `t_s` (its clock reads `c_s`).
//! Some leader receives it at `t_r ≥ t_s` and, if it answers, moves the
//! session deadline to `L(t_r) + TTL` on its own clock. The earliest true
//! time at which that leader's clock can have advanced by `TTL` is when it
//! runs fast, at rate `1 + ρ`:
//!
//! ```text
//! server_expiry ≥ t_r + TTL/(1 + ρ) ≥ t_s + TTL/(1 + ρ)
//! ```
//!
//! A new leader only takes over after the old leader's lease ran out, so
//! after every keepalive answer (`takeover ≥ t_r`), and restarts every
//! deadline at `takeover + TTL` on its clock; by the same argument it also
//! expires no earlier than `t_s + TTL/(1 + ρ)`. Expiry is then proposed and
//! applied through the log, which only delays it further.
//!
//! The client considers the session valid while its own clock reads less
//! than `c_s + S`. The latest true time at which its clock reaches that is
//! when it runs slow, at rate `1 − ρ`:
//!
//! ```text
//! client_deadline ≤ t_s + S/(1 − ρ)
//! ```
//!
//! Safety needs `client_deadline ≤ server_expiry` for all admissible clocks,
//! i.e. `S/(1 − ρ) ≤ TTL/(1 + ρ)`, so
//!
//! ```text
//! S = TTL·(1 − ρ)/(1 + ρ) − margin
//! ```
//!
//! With ρ given in parts per million (`ppm`), `ρ = ppm/10⁶` and
//! `S = ⌊TTL·(10⁶ − ppm)/(10⁶ + ppm)⌋ − margin`, in integer nanoseconds,
//! rounding down (towards safety) and saturating at zero. The bound is
//! tight: with the client exactly `1 − ρ` slow, the leader exactly `1 + ρ`
//! fast and `t_r = t_s`, `S` without the margin meets the expiry exactly.
//! The margin covers what the model leaves out: the time between the
//! client's last validity check and the protected resource acting on it.
//! Counting from the *send* time (not the answer's arrival) is what makes
//! network delay irrelevant.

use std::time::Duration;

/// One million: ρ is expressed in parts per million.
const PPM: u128 = 1_000_000;

/// Why a lease rule could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseRuleError {
    /// ρ must be below 100% (10⁶ ppm), or clocks could stop.
    DriftTooLarge {
        /// The drift asked for, in ppm.
        drift_ppm: u32,
    },
}

impl std::fmt::Display for LeaseRuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseRuleError::DriftTooLarge { drift_ppm } => {
                write!(f, "drift bound {drift_ppm} ppm must be below 1000000 ppm")
            }
        }
    }
}

impl std::error::Error for LeaseRuleError {}

/// The client lease rule for one session TTL: see the module docs for the
/// derivation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRule {
    ttl: Duration,
    drift_ppm: u32,
    margin: Duration,
    safe_ttl: Duration,
}

impl LeaseRule {
    /// A rule for sessions with `ttl`, clocks drifting by at most
    /// `drift_ppm` parts per million, and an extra safety `margin`.
    pub fn new(ttl: Duration, drift_ppm: u32, margin: Duration) -> Result<Self, LeaseRuleError> {
        if u128::from(drift_ppm) >= PPM {
            return Err(LeaseRuleError::DriftTooLarge { drift_ppm });
        }
        let shortened_nanos =
            ttl.as_nanos() * (PPM - u128::from(drift_ppm)) / (PPM + u128::from(drift_ppm));
        let safe_ttl = nanos_to_duration(shortened_nanos).saturating_sub(margin);
        Ok(LeaseRule {
            ttl,
            drift_ppm,
            margin,
            safe_ttl,
        })
    }

    /// A rule that does NOT shorten the TTL by the drift bound (only by the
    /// margin). Unsafe: exists so the simulator's canary can show that its
    /// mutual-exclusion check catches the missing shortening.
    #[cfg(any(test, feature = "canary"))]
    pub fn unshortened_canary(ttl: Duration, margin: Duration) -> Self {
        LeaseRule {
            ttl,
            drift_ppm: 0,
            margin,
            safe_ttl: ttl.saturating_sub(margin),
        }
    }

    /// The session TTL the cluster enforces.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The drift bound ρ in parts per million.
    pub fn drift_ppm(&self) -> u32 {
        self.drift_ppm
    }

    /// The extra margin subtracted.
    pub fn margin(&self) -> Duration {
        self.margin
    }

    /// `S = ⌊TTL·(1 − ρ)/(1 + ρ)⌋ − margin`: how long after sending an
    /// answered keepalive the client may count on its session.
    pub fn safe_ttl(&self) -> Duration {
        self.safe_ttl
    }

    /// The client-clock instant until which the session is valid, given the
    /// client-clock send time of an answered keepalive. Valid means
    /// `now < safe_until(sent_at)`.
    pub fn safe_until(&self, sent_at: Duration) -> Duration {
        sent_at.saturating_add(self.safe_ttl)
    }
}

/// Tracks a client's session lease on its own monotonic clock (one that
/// keeps counting across suspend, e.g. CLOCK_BOOTTIME). Times are durations
/// since an arbitrary fixed origin of that clock; this type never reads a
/// clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    rule: LeaseRule,
    valid_until: Option<Duration>,
}

impl Lease {
    /// A lease with no answered keepalive yet: not valid.
    pub fn new(rule: LeaseRule) -> Self {
        Lease {
            rule,
            valid_until: None,
        }
    }

    /// The rule in use.
    pub fn rule(&self) -> &LeaseRule {
        &self.rule
    }

    /// Records that the keepalive (or session open) sent at `sent_at` was
    /// answered. Answers may arrive out of order; the deadline never moves
    /// back.
    pub fn on_answered(&mut self, sent_at: Duration) {
        let until = self.rule.safe_until(sent_at);
        self.valid_until = Some(self.valid_until.map_or(until, |u| u.max(until)));
    }

    /// The client-clock instant the session stops being valid, if it ever was.
    pub fn valid_until(&self) -> Option<Duration> {
        self.valid_until
    }

    /// Whether, at client-clock `now`, the client may still believe it
    /// holds its locks and leaderships. False once `now` reaches the
    /// deadline: from then on everything must be treated as lost.
    pub fn is_valid(&self, now: Duration) -> bool {
        self.valid_until.is_some_and(|until| now < until)
    }
}

fn nanos_to_duration(nanos: u128) -> Duration {
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    // The remainder is below 10⁹, so it fits in u32.
    let sub = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    Duration::new(secs, sub)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Exact check, in rationals over nanoseconds: with the client clock at
    /// rate `rc/10⁶` and the leader clock at rate `rl/10⁶`, keepalive sent
    /// at true `t_s` and received `delay_ns` later, is the true time at
    /// which the client's `safe_ttl` runs out no later than the true time at
    /// which the leader's `ttl` runs out?
    ///
    /// client: t_s + S·10⁶/rc   server: t_s + delay + TTL·10⁶/rl
    /// ⇔ S·10⁶·rl ≤ delay·rc·rl + TTL·10⁶·rc
    fn client_deadline_not_after_expiry(
        safe_ttl: Duration,
        ttl: Duration,
        rc: u128,
        rl: u128,
        delay_ns: u128,
    ) -> bool {
        let s = safe_ttl.as_nanos();
        let t = ttl.as_nanos();
        s * PPM * rl <= delay_ns * rc * rl + t * PPM * rc
    }

    #[test]
    fn safe_ttl_matches_formula_example() {
        // TTL 10 s, ρ = 1% → 10·0.99/1.01 = 9.80198019... s, minus 5 ms.
        let rule =
            LeaseRule::new(Duration::from_secs(10), 10_000, Duration::from_millis(5)).unwrap();
        assert_eq!(
            rule.safe_ttl(),
            Duration::from_nanos(9_801_980_198 - 5_000_000)
        );
    }

    #[test]
    fn drift_of_one_hundred_percent_is_rejected() {
        assert_eq!(
            LeaseRule::new(Duration::from_secs(1), 1_000_000, Duration::ZERO),
            Err(LeaseRuleError::DriftTooLarge {
                drift_ppm: 1_000_000
            })
        );
    }

    #[test]
    fn lease_is_invalid_until_answered_and_from_deadline_on() {
        let rule = LeaseRule::new(Duration::from_secs(10), 0, Duration::ZERO).unwrap();
        let mut lease = Lease::new(rule);
        assert!(!lease.is_valid(Duration::ZERO));
        lease.on_answered(Duration::from_secs(5));
        lease.on_answered(Duration::from_secs(1)); // late answer: no move back
        assert!(lease.is_valid(Duration::from_millis(14_999)));
        assert!(!lease.is_valid(Duration::from_secs(15)));
    }

    #[test]
    fn unshortened_lease_outlives_server_expiry_with_opposite_drift() {
        // The canary: without the (1−ρ)/(1+ρ) shortening, a slow client and
        // a fast leader make the client believe too long.
        let ttl = Duration::from_secs(10);
        let ppm = 10_000u128;
        let rule = LeaseRule::unshortened_canary(ttl, Duration::from_millis(5));
        assert!(!client_deadline_not_after_expiry(
            rule.safe_ttl(),
            ttl,
            PPM - ppm,
            PPM + ppm,
            0
        ));
        let safe = LeaseRule::new(ttl, 10_000, Duration::from_millis(5)).unwrap();
        assert!(client_deadline_not_after_expiry(
            safe.safe_ttl(),
            ttl,
            PPM - ppm,
            PPM + ppm,
            0
        ));
    }

    #[test]
    fn shortening_is_tight_without_margin() {
        // With exact opposite drift and zero delay the bound is met, and
        // one nanosecond more would break it for a TTL divisible cleanly.
        let ttl = Duration::from_nanos(101 * 1_000_000);
        let rule = LeaseRule::new(ttl, 10_000, Duration::ZERO).unwrap();
        assert_eq!(rule.safe_ttl(), Duration::from_nanos(99 * 1_000_000));
        let (rc, rl) = (PPM - 10_000, PPM + 10_000);
        assert!(client_deadline_not_after_expiry(
            rule.safe_ttl(),
            ttl,
            rc,
            rl,
            0
        ));
        let longer = rule.safe_ttl() + Duration::from_nanos(1);
        assert!(!client_deadline_not_after_expiry(longer, ttl, rc, rl, 0));
    }

    proptest! {
        #[test]
        fn client_deadline_never_after_server_expiry_in_true_time(
            ttl_ms in 1u64..3_600_000,
            drift_ppm in 0u32..200_000,
            margin_ms in 0u64..100,
            client_fraction in 0u32..=1000,
            leader_fraction in 0u32..=1000,
            delay_ns in 0u64..1_000_000_000,
        ) {
            let ttl = Duration::from_millis(ttl_ms);
            let rule = LeaseRule::new(ttl, drift_ppm, Duration::from_millis(margin_ms)).unwrap();
            let rho = u128::from(drift_ppm);
            // Client rate anywhere in [1−ρ, 1+ρ], leader likewise; fraction
            // 0 puts the client slowest and the leader fastest (opposite).
            let rc = PPM - rho + 2 * rho * u128::from(client_fraction) / 1000;
            let rl = PPM + rho - 2 * rho * u128::from(leader_fraction) / 1000;
            prop_assert!(client_deadline_not_after_expiry(
                rule.safe_ttl(), ttl, rc, rl, u128::from(delay_ns)));
        }

        #[test]
        fn opposite_drift_without_shortening_is_caught(
            ttl_ms in 1_000u64..3_600_000,
            drift_ppm in 1_000u32..200_000,
        ) {
            // Margin below the drift error: the unshortened rule must fail,
            // which shows the property above can fail.
            let ttl = Duration::from_millis(ttl_ms);
            let rule = LeaseRule::unshortened_canary(ttl, Duration::ZERO);
            let rho = u128::from(drift_ppm);
            prop_assert!(!client_deadline_not_after_expiry(
                rule.safe_ttl(), ttl, PPM - rho, PPM + rho, 0));
        }
    }
}
