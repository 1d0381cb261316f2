//! Random numbers that must differ between runs and machines: the first
//! proposal id of a run, a WAL segment's salt. Not for the simulator, whose
//! randomness comes from its seed.

/// 64 random bits from the operating system. Without system randomness,
/// the wall clock in nanoseconds, which still differs between runs.
pub fn random_u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    })
}
