//! Switches that break one durability rule of the storage, so that the
//! power-loss test can show it catches each (canary builds only: outside
//! them every rule is on, and the check is a constant).

/// Which durability rule is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StorageCanary {
    /// Every rule on.
    #[default]
    None,
    /// The WAL's fdatasync is skipped: appends are acknowledged from the
    /// page cache.
    SkipWalSync,
    /// Directory fsyncs are skipped: new segments, snapshot renames and
    /// deletions are not made durable.
    SkipDirSync,
}

#[cfg(feature = "canary")]
static ACTIVE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Switches `canary` on for this process (canary builds only).
#[cfg(feature = "canary")]
pub fn set(canary: StorageCanary) {
    let code = match canary {
        StorageCanary::None => 0,
        StorageCanary::SkipWalSync => 1,
        StorageCanary::SkipDirSync => 2,
    };
    ACTIVE.store(code, std::sync::atomic::Ordering::Relaxed);
}

/// The rule switched off, if any.
pub fn active() -> StorageCanary {
    #[cfg(feature = "canary")]
    return match ACTIVE.load(std::sync::atomic::Ordering::Relaxed) {
        1 => StorageCanary::SkipWalSync,
        2 => StorageCanary::SkipDirSync,
        _ => StorageCanary::None,
    };
    #[cfg(not(feature = "canary"))]
    StorageCanary::None
}
