//! Random numbers that must differ between runs and machines: the first
//! proposal id of a run, a WAL segment's salt. Not for the simulator, whose
//! randomness comes from its seed.

/// 64 random bits from the system's CSPRNG (through the TLS provider, so
/// no extra dependency). Without system randomness, the wall clock in
/// nanoseconds, which still differs between runs.
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    match paxlock::tls::provider().secure_random.fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    }
}
