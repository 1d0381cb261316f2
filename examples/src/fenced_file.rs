//! A file that only accepts writes carrying a fencing token at least as
//! high as any it has accepted before.
//!
//! This is the resource side of fencing (what Kleppmann's "How to do
//! distributed locking" and Jepsen's etcd 3.4.3 report ask for): a lock
//! holder that was paused past its lease may still *believe* it holds the
//! lock and try to write; its token is lower than the new holder's, so the
//! write is refused here, whatever the holder believes.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A file guarded by fencing tokens. The highest token seen is stored next
/// to it (`<file>.token`), so the guard survives restarts of the writer.
#[derive(Debug, Clone)]
pub struct FencedFile {
    path: PathBuf,
    token_path: PathBuf,
}

/// Why a write was refused.
#[derive(Debug)]
pub enum FencedWriteError {
    /// A writer with a higher token has written since: this one's lock is gone.
    Stale {
        /// The token presented.
        presented: u64,
        /// The highest token accepted so far.
        highest: u64,
    },
    /// The file system failed.
    Io(io::Error),
}

impl std::fmt::Display for FencedWriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FencedWriteError::Stale { presented, highest } => write!(
                f,
                "refused write with fencing token {presented}: token {highest} has written since"
            ),
            FencedWriteError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for FencedWriteError {}

impl FencedFile {
    /// Guards `path`.
    pub fn new(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref().to_path_buf();
        let mut token_path = path.clone().into_os_string();
        token_path.push(".token");
        FencedFile {
            path,
            token_path: token_path.into(),
        }
    }

    /// The highest token accepted so far (0 if none).
    pub fn highest_token(&self) -> io::Result<u64> {
        match fs::read_to_string(&self.token_path) {
            Ok(text) => Ok(text.trim().parse().unwrap_or(0)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Appends `line` if `token` is at least the highest seen; records it.
    /// The rule is the client crate's [`paxlock::fencing::TokenFence`],
    /// with the highest token kept in a file instead of in memory.
    pub fn append(&self, token: u64, line: &str) -> Result<(), FencedWriteError> {
        let highest = self.highest_token().map_err(FencedWriteError::Io)?;
        let fence = paxlock::fencing::TokenFence::new(highest);
        if fence.admit(token).is_err() {
            return Err(FencedWriteError::Stale {
                presented: token,
                highest,
            });
        }
        let mut text = fs::read_to_string(&self.path).unwrap_or_default();
        text.push_str(line);
        text.push('\n');
        fs::write(&self.path, text).map_err(FencedWriteError::Io)?;
        fs::write(&self.token_path, fence.highest().to_string()).map_err(FencedWriteError::Io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_token_is_refused_after_a_higher_one_wrote() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = std::env::temp_dir().join(format!("fenced-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let file = FencedFile::new(dir.join("out.txt"));
        file.append(5, "first")?;
        file.append(7, "second")?;
        let stale = file.append(6, "late writer");
        assert!(matches!(
            stale,
            Err(FencedWriteError::Stale {
                presented: 6,
                highest: 7
            })
        ));
        assert_eq!(fs::read_to_string(dir.join("out.txt"))?, "first\nsecond\n");
        fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
