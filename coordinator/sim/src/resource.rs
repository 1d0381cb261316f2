//! A simulated resource protected by a lock: it checks fencing tokens the
//! way a real storage service must (Kleppmann's fencing; Jepsen's etcd
//! 3.4.3 report), so a stale holder's late write is refused.

/// One fenced resource. Accepts a write only if its token is at least the
/// highest token it has seen; a lower token is refused and counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FencedResource {
    highest_seen: u64,
    accepted: u64,
    rejected: u64,
}

impl FencedResource {
    /// Offers a write carrying `token`. Returns whether it was accepted.
    pub fn write(&mut self, token: u64) -> bool {
        if token < self.highest_seen {
            self.rejected += 1;
            return false;
        }
        self.highest_seen = token;
        self.accepted += 1;
        true
    }

    /// The highest token any write carried (0 before the first).
    pub fn highest_seen(&self) -> u64 {
        self.highest_seen
    }

    /// Writes accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Writes refused for carrying a token below one already seen.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }
}

#[cfg(test)]
mod tests {
    use super::FencedResource;

    #[test]
    fn resource_refuses_a_token_below_the_highest_seen() {
        let mut r = FencedResource::default();
        assert!(r.write(5));
        assert!(r.write(5));
        assert!(r.write(9));
        assert!(!r.write(7));
        assert_eq!((r.highest_seen(), r.accepted(), r.rejected()), (9, 3, 1));
    }
}
