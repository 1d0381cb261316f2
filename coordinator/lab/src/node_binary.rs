//! Which `paxlock` executable the lab's clusters run.

use std::path::{Path, PathBuf};

use anyhow::Context;
use paxlock_launcher::NodeBinary;

/// `explicit` if given; otherwise the `paxlock` built with this lab (next
/// to it, or one folder up for a test binary in `deps/`), else the one on
/// `PATH`. Probed for the flags it supports, so an older release given
/// with `--paxlock-bin` is started the way it understands.
pub fn node_binary(explicit: Option<&Path>) -> anyhow::Result<NodeBinary> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => beside_this_executable().unwrap_or_else(|| PathBuf::from("paxlock")),
    };
    NodeBinary::probe(&path).with_context(|| {
        format!(
            "no usable paxlock at {}; build it (cargo build --release -p paxlock-coordinator) \
             or pass --paxlock-bin PATH",
            path.display()
        )
    })
}

fn beside_this_executable() -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    let folder = me.parent()?;
    [folder.join("paxlock"), folder.parent()?.join("paxlock")]
        .into_iter()
        .find(|candidate| candidate.is_file())
}
