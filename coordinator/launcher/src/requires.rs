//! What a test needs of the machine, shared by every crate's tests. Tests
//! that need something of the machine (root, a system tool, a kernel
//! feature) say so here, so that `cargo test` on a fresh machine skips them
//! with a printed reason instead of failing, while CI, which sets
//! `PAXLOCK_REQUIRE_SYSTEM_TESTS=1` after installing what they need, runs
//! every one of them and fails if a requirement is missing.

use std::path::Path;

/// The environment variable that turns a missing requirement into a failure.
pub const REQUIRE_ALL: &str = "PAXLOCK_REQUIRE_SYSTEM_TESTS";

/// Something a test needs of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Running as root (namespaces, mounts).
    Root,
    /// An executable on `PATH` (`iptables`, `ip`, `prlimit`...).
    Tool(&'static str),
    /// A device node (`/dev/fuse`).
    Device(&'static str),
    /// The previous release's `paxlock` binary, at the path in
    /// `PAXLOCK_PREVIOUS_RELEASE_BIN` (`.ci/run` builds it from the commit
    /// named in `.ci/previous-release`).
    PreviousRelease,
}

/// Where the previous release's `paxlock` binary is, if it was built.
pub fn previous_release_bin() -> Option<std::path::PathBuf> {
    std::env::var_os("PAXLOCK_PREVIOUS_RELEASE_BIN")
        .map(std::path::PathBuf::from)
        .filter(|p| is_executable(p))
}

impl Need {
    /// Why it is missing, or `None` if it is there.
    fn missing(self) -> Option<String> {
        match self {
            Need::Root if !rustix::process::geteuid().is_root() => {
                Some("it must run as root".to_string())
            }
            Need::Root => None,
            Need::Tool(tool) if !on_path(tool) => Some(format!("`{tool}` is not installed")),
            Need::Tool(_) => None,
            Need::Device(path) if !Path::new(path).exists() => Some(format!("{path} is missing")),
            Need::Device(_) => None,
            Need::PreviousRelease if previous_release_bin().is_none() => Some(
                "PAXLOCK_PREVIOUS_RELEASE_BIN does not name the previous release's paxlock \
                 (build it as .ci/run does)"
                    .to_string(),
            ),
            Need::PreviousRelease => None,
        }
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| is_executable(&dir.join(tool))))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether `test` may run here. If something in `needs` is missing, prints
/// why and returns `false` (the caller returns early), unless
/// `PAXLOCK_REQUIRE_SYSTEM_TESTS=1`, where it panics: CI installs every
/// requirement, so a missing one there is a broken CI, not a skip.
pub fn machine_has(test: &str, needs: &[Need]) -> bool {
    let missing: Vec<String> = needs.iter().filter_map(|n| n.missing()).collect();
    if missing.is_empty() {
        return true;
    }
    let why = missing.join("; ");
    // `.ci/run` cannot build the previous release in a clone without
    // history; it says so, and only that requirement may then be missing.
    let excused = std::env::var_os("PAXLOCK_PREVIOUS_RELEASE_UNAVAILABLE").is_some()
        && needs
            .iter()
            .all(|n| matches!(n, Need::PreviousRelease) || n.missing().is_none());
    if std::env::var(REQUIRE_ALL).is_ok_and(|v| v == "1") && !excused {
        panic!("{test} cannot run: {why} ({REQUIRE_ALL}=1 requires it to)");
    }
    eprintln!("SKIPPED {test}: {why} (set {REQUIRE_ALL}=1 to make this a failure)");
    false
}
