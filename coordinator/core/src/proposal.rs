//! The log entry envelope: which node proposed a command, and under which
//! id, so the proposer can route the result back to the waiting client.
//!
//! Layout: `origin node id (u64 LE) | proposal id (u64 LE) | command bytes`.
//! Every replica applies the command; only the origin answers.

use crate::locks::{Command, DecodeError};

const HEADER_BYTES: usize = 16;

/// A decoded log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The node that proposed it.
    pub origin: u64,
    /// The proposer's id for it.
    pub id: u64,
    /// The command.
    pub command: Command,
}

/// Why a log entry could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProposalError {
    /// Shorter than the header.
    #[error("log entry of {0} bytes is shorter than its 16-byte header")]
    Short(usize),
    /// The command does not decode.
    #[error("log entry command does not decode: {0}")]
    Command(#[from] DecodeError),
    /// The entry is consensus' own: a membership change, not a command.
    #[error("log entry is a membership change, not a command")]
    Membership,
}

impl Proposal {
    /// Encodes the envelope.
    pub fn encode(origin: u64, id: u64, command: &Command) -> Result<Vec<u8>, String> {
        let body = command.encode().map_err(|e| e.to_string())?;
        let mut bytes = Vec::with_capacity(HEADER_BYTES + body.len());
        bytes.extend_from_slice(&origin.to_le_bytes());
        bytes.extend_from_slice(&id.to_le_bytes());
        bytes.extend_from_slice(&body);
        Ok(bytes)
    }

    /// Decodes the envelope; never panics on bad bytes. A membership
    /// change (`paxos::membership`) is never taken for a command.
    pub fn decode(bytes: &[u8]) -> Result<Proposal, ProposalError> {
        if crate::paxos::membership::is_membership_value(bytes) {
            return Err(ProposalError::Membership);
        }
        let (Some(origin), Some(id), Some(body)) =
            (bytes.get(0..8), bytes.get(8..16), bytes.get(HEADER_BYTES..))
        else {
            return Err(ProposalError::Short(bytes.len()));
        };
        let mut o = [0u8; 8];
        o.copy_from_slice(origin);
        let mut i = [0u8; 8];
        i.copy_from_slice(id);
        Ok(Proposal {
            origin: u64::from_le_bytes(o),
            id: u64::from_le_bytes(i),
            command: Command::decode(body)?,
        })
    }

    /// Reads only the routing header (for refused proposals).
    pub fn header(bytes: &[u8]) -> Option<(u64, u64)> {
        let mut o = [0u8; 8];
        o.copy_from_slice(bytes.get(0..8)?);
        let mut i = [0u8; 8];
        i.copy_from_slice(bytes.get(8..16)?);
        Some((u64::from_le_bytes(o), u64::from_le_bytes(i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locks::CommandKind;

    #[test]
    fn envelope_round_trips() -> Result<(), Box<dyn std::error::Error>> {
        let command = Command {
            at_ms: 5,
            kind: CommandKind::OpenSession { ttl_ms: 1000 },
        };
        let bytes = Proposal::encode(2, 77, &command)?;
        let decoded = Proposal::decode(&bytes)?;
        assert_eq!(
            decoded,
            Proposal {
                origin: 2,
                id: 77,
                command
            }
        );
        assert_eq!(Proposal::header(&bytes), Some((2, 77)));
        Ok(())
    }

    #[test]
    fn short_or_garbage_entries_are_errors() {
        assert!(matches!(
            Proposal::decode(&[1, 2, 3]),
            Err(ProposalError::Short(3))
        ));
        let mut bytes = vec![0u8; 16];
        bytes.extend_from_slice(&[0xff; 8]);
        assert!(matches!(
            Proposal::decode(&bytes),
            Err(ProposalError::Command(_))
        ));
        let change = crate::paxos::MembershipChange::AddLearner(crate::paxos::NodeId(4), None);
        assert!(matches!(
            Proposal::decode(&change.encode()),
            Err(ProposalError::Membership)
        ));
    }
}
