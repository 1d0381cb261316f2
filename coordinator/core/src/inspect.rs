//! Read-only views of what the cluster holds, for the people who run it:
//! one lock's holder and queue, locks by name prefix, sessions with what
//! they hold, and whether a fencing token is still a lock's current grant.
//!
//! Built here, in the core, from the machine (and, for sessions, the
//! leader's deadlines), so that what is shown is decided in one place; a
//! node serves them as reads under the leader lease, like leader queries
//! (see [`crate::admission`]), so they are linearizable.
//!
//! Every answer is bounded: a page holds at most [`MAX_PAGE_ENTRIES`]
//! entries and about [`MAX_PAGE_BYTES`] bytes of names and identities
//! (always at least one entry, which the limits bound: a session holds at
//! most `max_locks_per_session` names), looks at most at
//! [`MAX_PAGE_SCAN`] entries (the machine is locked meanwhile), and says
//! where the next page starts. Lists show only what the caller may see: locks it may `read`,
//! its own sessions (an administrator's: every session).

use crate::access::{self, Admins, Permission};
use crate::leader_role::{Deadline, LeaderRole};
use crate::locks::lock::Holder;
use crate::locks::shared::{Mode, SharedKind, SharedLock};
use crate::locks::{FencingToken, Identity, SessionId, StateMachine};
use crate::paxos::Nanos;

/// Most entries in one page of a list.
pub const MAX_PAGE_ENTRIES: usize = 1000;

/// About the most bytes of names and identities one page carries: with
/// the per-entry overhead of the wire, an answer stays well inside one
/// client frame (4 MiB).
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;

/// Most entries one page looks at, shown or left out.
pub const MAX_PAGE_SCAN: usize = 10 * MAX_PAGE_ENTRIES;

/// A session, as inspection shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The session.
    pub session: SessionId,
    /// The identity it belongs to (`None`: opened before protocol 3 and
    /// not claimed yet).
    pub owner: Option<Identity>,
}

/// A lock's current grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The holding session.
    pub holder: Member,
    /// The grant's fencing token.
    pub token: FencingToken,
    /// When it was granted, on the cluster's logical clock (`None`: before
    /// the cluster spoke protocol 3).
    pub since_ms: Option<u64>,
}

/// A grant of a semaphore or read/write lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedHolder {
    /// The grant (readers holding together share its token).
    pub grant: Grant,
    /// A permit, or read or write mode.
    pub mode: Mode,
    /// A permit's slot (0 otherwise).
    pub slot: u32,
    /// What its holder presents to the resource (see
    /// [`crate::locks::shared`]).
    pub fencing: FencingToken,
}

/// A session queued for a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The waiting session.
    pub member: Member,
    /// When it joined the queue, on the cluster's logical clock (`None`:
    /// before the cluster spoke protocol 3).
    pub since_ms: Option<u64>,
    /// What it waits for, at a semaphore or read/write lock (`None`: a
    /// lock).
    pub mode: Option<Mode>,
}

/// One lock, whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockView {
    /// The lock.
    pub name: String,
    /// A semaphore or a read/write lock (`None`: a lock, or nothing).
    pub kind: Option<SharedKind>,
    /// Its grant (`None`: free, or in lock-delay; always for a semaphore
    /// or read/write lock, whose grants are `holders`).
    pub grant: Option<Grant>,
    /// A semaphore's or read/write lock's grants, oldest first.
    pub holders: Vec<SharedHolder>,
    /// The grant's value, set by its acquire (empty: none). Waiters'
    /// values are not shown: they could not all fit one answer.
    pub value: Vec<u8>,
    /// Queued sessions, front first (at most `max_waiters_per_lock`).
    pub waiters: Vec<Queued>,
    /// When its lock-delay ends, on the cluster's logical clock.
    pub delayed_until_ms: Option<u64>,
    /// The cluster's logical clock now (milliseconds).
    pub now_ms: u64,
}

/// One lock in a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockSummary {
    /// The lock.
    pub name: String,
    /// A semaphore or a read/write lock (`None`: a lock).
    pub kind: Option<SharedKind>,
    /// Its grant (a lock's).
    pub grant: Option<Grant>,
    /// How many grants a semaphore or read/write lock has.
    pub holders: u32,
    /// How many sessions wait for it.
    pub waiters: u32,
    /// When its lock-delay ends, on the logical clock.
    pub delayed_until_ms: Option<u64>,
}

/// One session in a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    /// The session and its identity.
    pub member: Member,
    /// Its TTL.
    pub ttl_ms: u64,
    /// How long until the leader expires it without a keepalive: `Some(0)`
    /// once its expiry is under way; `None` if this node has no deadline
    /// for it (it does not serve as leader).
    pub expires_in_ms: Option<u64>,
    /// Locks it holds, by name.
    pub held: Vec<String>,
    /// Locks it waits for.
    pub waiting: Vec<String>,
    /// Elections it leads or campaigns in.
    pub campaigns: Vec<String>,
}

/// One page of a list, and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, K> {
    /// The entries, in key order.
    pub items: Vec<T>,
    /// The key to ask the next page after; `None`: this was the last.
    pub next_after: Option<K>,
}

/// Who asks, and what the rules let them see.
#[derive(Clone, Copy)]
pub struct Viewer<'a> {
    /// The caller's identity, from its certificate.
    pub caller: &'a Identity,
    /// The node's administrators.
    pub admins: &'a Admins,
}

impl Viewer<'_> {
    fn may_read(&self, machine: &StateMachine, name: &str) -> bool {
        access::check(
            machine.access_rules(),
            self.admins,
            self.caller,
            Permission::Read,
            name,
        )
        .is_ok()
    }

    fn may_see_session(&self, owner: Option<&Identity>) -> bool {
        self.admins.contains(self.caller) || owner == Some(self.caller)
    }
}

fn member(machine: &StateMachine, session: SessionId) -> Member {
    Member {
        session,
        owner: machine.session_owner(session).ok().flatten().cloned(),
    }
}

fn grant(machine: &StateMachine, holder: Holder) -> Grant {
    Grant {
        holder: member(machine, holder.session),
        token: holder.token,
        since_ms: holder.since_ms,
    }
}

/// The lock `name` whole (a lock nobody holds, waits for or delays is
/// shown free: the machine keeps no such lock).
pub fn describe_lock(machine: &StateMachine, name: &str) -> LockView {
    if let Some(shared) = machine.shared_lock(name) {
        return describe_shared(machine, name, shared);
    }
    let lock = machine.lock(name);
    LockView {
        name: name.to_owned(),
        kind: None,
        grant: machine.holder(name).map(|h| grant(machine, h)),
        holders: Vec::new(),
        value: lock.map(|l| l.value.clone()).unwrap_or_default(),
        waiters: lock
            .iter()
            .flat_map(|l| l.waiters.iter())
            .map(|w| Queued {
                member: member(machine, w.session),
                since_ms: w.since_ms,
                mode: None,
            })
            .collect(),
        delayed_until_ms: machine.lock_delayed_until_ms(name),
        now_ms: machine.now_ms(),
    }
}

/// A semaphore or read/write lock whole: every grant, the queue with what
/// each waits for, the last of its lock-delays.
fn describe_shared(machine: &StateMachine, name: &str, lock: &SharedLock) -> LockView {
    LockView {
        name: name.to_owned(),
        kind: Some(lock.kind),
        grant: None,
        holders: lock
            .grants
            .iter()
            .map(|g| SharedHolder {
                grant: Grant {
                    holder: member(machine, g.session),
                    token: g.token,
                    since_ms: Some(g.since_ms),
                },
                mode: g.mode,
                slot: g.slot,
                fencing: g.fencing,
            })
            .collect(),
        value: Vec::new(),
        waiters: lock
            .waiters
            .iter()
            .map(|w| Queued {
                member: member(machine, w.session),
                since_ms: Some(w.since_ms),
                mode: Some(w.mode),
            })
            .collect(),
        delayed_until_ms: lock.delays.iter().map(|d| d.until_ms).max(),
        now_ms: machine.now_ms(),
    }
}

/// Whether `token` is the current grant of `name` (Chubby's
/// `CheckSequencer`), and the current grant's token, if any.
pub fn check_token(machine: &StateMachine, name: &str, token: FencingToken) -> TokenCheck {
    if let Some(lock) = machine.shared_lock(name) {
        // Any of its grants: another permit or reader holds beside it.
        return TokenCheck {
            current: lock.grants.iter().any(|g| g.fencing == token),
            current_token: lock.highest_fencing(),
        };
    }
    let current = machine.holder(name).map(|h| h.token);
    TokenCheck {
        current: current == Some(token),
        current_token: current,
    }
}

/// The answer of [`check_token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCheck {
    /// `token` is the lock's current grant (a semaphore's or read/write
    /// lock's: the fencing value of one of its current grants).
    pub current: bool,
    /// The current grant's token (a semaphore's or read/write lock's: the
    /// highest fencing value of its grants; `None`: nobody holds it).
    pub current_token: Option<FencingToken>,
}

/// Locks whose names start with `prefix`, after `after` in name order,
/// at most `limit` (0, or more than [`MAX_PAGE_ENTRIES`]: that many), only
/// those `viewer` may read.
pub fn list_locks(
    machine: &StateMachine,
    viewer: Viewer<'_>,
    prefix: &str,
    after: &str,
    limit: usize,
) -> Page<LockSummary, String> {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let locks = machine.locks_from(prefix, after).map(|(name, lock)| {
        let summary = || LockSummary {
            name: name.clone(),
            kind: None,
            grant: lock.holder.map(|h| grant(machine, h)),
            holders: 0,
            waiters: count(lock.waiters.len()),
            delayed_until_ms: lock.delayed_until_ms,
        };
        (name, summary_of(viewer, machine, name, summary))
    });
    let shared = machine.shared_from(prefix, after).map(|(name, lock)| {
        let summary = || LockSummary {
            name: name.clone(),
            kind: Some(lock.kind),
            grant: None,
            holders: count(lock.grants.len()),
            waiters: count(lock.waiters.len()),
            delayed_until_ms: lock.delays.iter().map(|d| d.until_ms).max(),
        };
        (name, summary_of(viewer, machine, name, summary))
    });
    // Both tables in name order (a name is in one of them only).
    let entries = merge_by_name(locks, shared)
        .take_while(|(name, _)| name.starts_with(prefix))
        .map(|(name, shown)| (name.clone(), shown));
    page(entries, limit, lock_bytes)
}

/// A lock's summary, if `viewer` may read it.
fn summary_of(
    viewer: Viewer<'_>,
    machine: &StateMachine,
    name: &str,
    summary: impl FnOnce() -> LockSummary,
) -> Option<LockSummary> {
    viewer.may_read(machine, name).then(summary)
}

/// Two iterators sorted by name, merged in name order.
fn merge_by_name<'a, T>(
    left: impl Iterator<Item = (&'a String, T)>,
    right: impl Iterator<Item = (&'a String, T)>,
) -> impl Iterator<Item = (&'a String, T)> {
    let (mut left, mut right) = (left.peekable(), right.peekable());
    std::iter::from_fn(move || match (left.peek(), right.peek()) {
        (Some((l, _)), Some((r, _))) if r < l => right.next(),
        (Some(_), _) => left.next(),
        (None, _) => right.next(),
    })
}

/// Sessions after `after` in id order, at most `limit` (as for
/// [`list_locks`]): the caller's own, or every one for an
/// administrator. `role` and `now` give each its time left on this
/// (leading) node.
pub fn list_sessions(
    machine: &StateMachine,
    role: &LeaderRole,
    now: Nanos,
    viewer: Viewer<'_>,
    after: SessionId,
    limit: usize,
) -> Page<SessionView, SessionId> {
    let names =
        |set: &std::collections::BTreeSet<String>| -> Vec<String> { set.iter().cloned().collect() };
    let entries = machine.sessions_after(after).map(|(id, session)| {
        let shown = viewer
            .may_see_session(session.owner.as_ref())
            .then(|| SessionView {
                member: Member {
                    session: id,
                    owner: session.owner.clone(),
                },
                ttl_ms: session.ttl_ms,
                expires_in_ms: role.deadline(id).map(|d| match d {
                    Deadline::At(at) => at.0.saturating_sub(now.0) / 1_000_000,
                    Deadline::Expiring { .. } => 0,
                }),
                held: names(&session.held),
                waiting: names(&session.waiting),
                campaigns: names(&session.campaigns),
            });
        (id, shown)
    });
    page(entries, limit, session_bytes)
}

/// Fills one page from `entries`, in key order, each with what the caller
/// may see of it (`None`: nothing, so it is left out): at most `limit`
/// shown (see [`list_locks`]) and about [`MAX_PAGE_BYTES`] as `bytes`
/// counts them, at least one. The next page starts after the key of the
/// last entry looked at, if any was left. At most [`MAX_PAGE_SCAN`]
/// entries are looked at, shown or not, so that a request for what the
/// caller may see little of still holds the machine for a bounded time
/// (its page may then be short, or empty, with a next page to ask for).
fn page<K, T>(
    entries: impl Iterator<Item = (K, Option<T>)>,
    limit: usize,
    bytes: impl Fn(&T) -> usize,
) -> Page<T, K> {
    let limit = match limit {
        0 => MAX_PAGE_ENTRIES,
        n => n.min(MAX_PAGE_ENTRIES),
    };
    let mut items = Vec::new();
    let mut used = 0;
    let mut last = None;
    for (scanned, (key, shown)) in entries.enumerate() {
        let full = items.len() >= limit || (used >= MAX_PAGE_BYTES && !items.is_empty());
        if full || scanned >= MAX_PAGE_SCAN {
            return Page {
                items,
                next_after: last,
            };
        }
        if let Some(item) = shown {
            used += bytes(&item);
            items.push(item);
        }
        last = Some(key);
    }
    Page {
        items,
        next_after: None,
    }
}

fn lock_bytes(lock: &LockSummary) -> usize {
    let owner = lock.grant.as_ref().and_then(|g| g.holder.owner.as_ref());
    lock.name.len() + owner.map_or(0, |o| o.as_str().len())
}

fn session_bytes(view: &SessionView) -> usize {
    let names = |v: &[String]| v.iter().map(String::len).sum::<usize>();
    view.member.owner.as_ref().map_or(0, |o| o.as_str().len())
        + names(&view.held)
        + names(&view.waiting)
        + names(&view.campaigns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{AccessRule, AccessRules};
    use crate::locks::harness::Harness;
    use crate::locks::{ClientOp, CommandKind, Reply, RequestId, CURRENT_PROTOCOL};

    fn identity(name: &str) -> Identity {
        Identity(name.into())
    }

    /// A machine at protocol 3 with a larger lock allowance per session.
    fn machine() -> Harness {
        let mut h = Harness::small();
        h.sm.config.limits.max_locks_per_session = 16;
        h.apply(CommandKind::RaiseProtocol {
            version: CURRENT_PROTOCOL,
        });
        h
    }

    fn open_as(h: &mut Harness, owner: &str) -> SessionId {
        let out = h.apply(CommandKind::OpenSessionAs {
            ttl_ms: 1_000,
            owner: identity(owner),
            open_key: 0,
        });
        match out.reply {
            Ok(Reply::SessionOpened { session }) => session,
            other => panic!("open failed: {other:?}"),
        }
    }

    fn acquire_as(h: &mut Harness, owner: &str, session: SessionId, id: u64, name: &str) {
        let out = h.apply(CommandKind::ClientAs {
            caller: identity(owner),
            session,
            request_id: RequestId(id),
            ack_below: RequestId(id),
            waiting: Vec::new(),
            op: ClientOp::Acquire {
                name: name.into(),
                wait: true,
                value: Vec::new(),
            },
        });
        assert!(out.reply.is_ok(), "{:?}", out.reply);
    }

    #[test]
    fn lock_lists_come_in_pages_within_the_prefix() {
        let mut h = machine();
        let s = open_as(&mut h, "alice");
        for (i, name) in ["a/0", "a/1", "a/2", "a/3", "a/4", "b/0"]
            .iter()
            .enumerate()
        {
            acquire_as(&mut h, "alice", s, i as u64 + 1, name);
        }
        let admins = Admins::default();
        let alice = identity("alice");
        let viewer = Viewer {
            caller: &alice,
            admins: &admins,
        };
        let mut after = String::new();
        let mut pages = Vec::new();
        loop {
            let page = list_locks(&h.sm, viewer, "a/", &after, 2);
            pages.push(
                page.items
                    .iter()
                    .map(|l| l.name.clone())
                    .collect::<Vec<_>>(),
            );
            match page.next_after {
                Some(next) => after = next,
                None => break,
            }
        }
        assert_eq!(pages, [vec!["a/0", "a/1"], vec!["a/2", "a/3"], vec!["a/4"]]);
        let all = list_locks(&h.sm, viewer, "", "", 0);
        assert_eq!(all.items.len(), 6);
        let grant = all.items[0].grant.as_ref().map(|g| g.holder.owner.clone());
        assert_eq!(grant, Some(Some(alice.clone())));
    }

    #[test]
    fn lists_show_only_what_the_caller_may_see() {
        let mut h = machine();
        let a = open_as(&mut h, "alice");
        let b = open_as(&mut h, "bob");
        acquire_as(&mut h, "alice", a, 1, "team/open");
        acquire_as(&mut h, "alice", a, 2, "team/secret");
        acquire_as(&mut h, "bob", b, 1, "team/open");
        let rules = AccessRules {
            rules: vec![AccessRule {
                identities: vec!["*".into()],
                permissions: [Permission::Lock, Permission::Read].into_iter().collect(),
                prefixes: vec!["team/open".into()],
            }],
            quotas: Vec::new(),
        };
        h.apply(CommandKind::SetAccessRules {
            by: identity("ops"),
            rules,
            expected_version: None,
        });
        let admins = Admins::new([identity("ops")]);
        let (bob, ops) = (identity("bob"), identity("ops"));
        let as_bob = Viewer {
            caller: &bob,
            admins: &admins,
        };
        let as_ops = Viewer {
            caller: &ops,
            admins: &admins,
        };
        let names = |page: Page<LockSummary, String>| -> Vec<String> {
            page.items.into_iter().map(|l| l.name).collect()
        };
        assert_eq!(names(list_locks(&h.sm, as_bob, "", "", 0)), ["team/open"]);
        assert_eq!(
            names(list_locks(&h.sm, as_ops, "", "", 0)),
            ["team/open", "team/secret"]
        );
        let role = LeaderRole::default();
        let sessions = |viewer| -> Vec<SessionId> {
            list_sessions(&h.sm, &role, Nanos(0), viewer, SessionId(0), 0)
                .items
                .into_iter()
                .map(|s| s.member.session)
                .collect()
        };
        assert_eq!(sessions(as_bob), [b]);
        assert_eq!(sessions(as_ops), [a, b]);
        // Bob waits behind alice for the lock both asked for.
        let view = describe_lock(&h.sm, "team/open");
        assert_eq!(view.grant.map(|g| g.holder.session), Some(a));
        assert_eq!(
            view.waiters
                .iter()
                .map(|w| w.member.session)
                .collect::<Vec<_>>(),
            [b]
        );
    }

    #[test]
    fn a_page_looks_at_a_bounded_number_of_entries_shown_or_not() {
        // Only the last of 2 * MAX_PAGE_SCAN entries is shown.
        let total = 2 * MAX_PAGE_SCAN;
        let entries = |from: usize| (from..total).map(move |k| (k, (k == total - 1).then_some(k)));
        let first = page(entries(0), 0, |_| 1);
        assert!(first.items.is_empty());
        assert_eq!(first.next_after, Some(MAX_PAGE_SCAN - 1));
        let second = page(entries(MAX_PAGE_SCAN), 0, |_| 1);
        assert_eq!(second.items, [total - 1]);
        assert_eq!(second.next_after, None);
        // The byte budget closes a page, after at least one entry.
        let big = page((0..5).map(|k| (k, Some(k))), 0, |_| MAX_PAGE_BYTES);
        assert_eq!((big.items, big.next_after), (vec![0], Some(0)));
    }

    #[test]
    fn a_token_is_current_only_while_its_grant_lasts() {
        let mut h = machine();
        let s = open_as(&mut h, "alice");
        acquire_as(&mut h, "alice", s, 1, "x");
        let token = h.sm.holder("x").map_or(FencingToken(0), |g| g.token);
        assert!(check_token(&h.sm, "x", token).current);
        assert!(!check_token(&h.sm, "x", FencingToken(token.0 - 1)).current);
        h.expire(s);
        let gone = check_token(&h.sm, "x", token);
        assert_eq!((gone.current, gone.current_token), (false, None));
    }
}
