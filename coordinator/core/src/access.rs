//! Access control: which identity may do what to which names.
//!
//! The rules are replicated state (the machine holds them, changed by a
//! logged `SetAccessRules`), so every node checks a request against the
//! same rules at the same point of the log, and a change is in force for
//! every request admitted after it was applied: a leader serves only with
//! its takeover applied, so it has applied every change acknowledged
//! before it. Which identities are administrators is node configuration
//! ([`Admins`]): they are the ones who change the rules, so the rules
//! cannot lock them out.
//!
//! The policy, in full:
//!
//! - an administrator named in the node config may do everything;
//! - with no rules, every identity may `lock`, `campaign` and `read` any
//!   name, and nobody else is an administrator;
//! - once any rule exists, a request is allowed only if a rule names the
//!   caller (exactly, or by a pattern ending in `*`), the permission, and a
//!   prefix of the name. `admin` granted on the prefix `""` makes an
//!   identity an administrator of the whole cluster (the rules included);
//!   on a longer prefix, of those names only (what administration of names
//!   means arrives with revocation and force-release).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::locks::command::{Identity, MAX_IDENTITY_BYTES};
use crate::locks::limits::Limits;

/// Most rules a cluster holds.
pub const MAX_RULES: usize = 256;

/// Most identity patterns, and most name prefixes, in one rule.
pub const MAX_ENTRIES_PER_RULE: usize = 64;

/// Most bytes the rules take on any wire (see [`AccessRules::size_bound`]):
/// a `SetAccessRules` command and a client request carrying them both fit
/// their frames with room to spare.
pub const MAX_RULES_BYTES: usize = 32 * 1024;

/// Longest name prefix in a rule: the longest name.
pub const MAX_PREFIX_BYTES: usize = 512;

/// What a request does to a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Acquire, release, renew, cancel a lock.
    Lock,
    /// Campaign, proclaim, resign in an election.
    Campaign,
    /// Ask who leads an election, watch it.
    Read,
    /// Administer: the rules (on the prefix `""`), and later sessions of
    /// others, revocation and force-release.
    Admin,
}

impl Permission {
    /// Every permission, in rule-file order.
    pub const ALL: [Permission; 4] = [
        Permission::Lock,
        Permission::Campaign,
        Permission::Read,
        Permission::Admin,
    ];

    /// The permission's name in rule files and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Lock => "lock",
            Permission::Campaign => "campaign",
            Permission::Read => "read",
            Permission::Admin => "admin",
        }
    }

    /// The permission named `name`, if any.
    pub fn parse(name: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule: the identities it names may do `permissions` to every name
/// that starts with one of `prefixes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRule {
    /// Identities, exactly, or by a pattern ending in `*` (`billing-*`;
    /// `*` alone names everyone).
    pub identities: Vec<String>,
    /// What they may do.
    pub permissions: BTreeSet<Permission>,
    /// Name prefixes (`""` names every name).
    pub prefixes: Vec<String>,
}

impl AccessRule {
    fn names(&self, caller: &Identity) -> bool {
        self.identities
            .iter()
            .any(|pattern| identity_matches(pattern, caller.as_str()))
    }

    fn covers(&self, name: &str) -> bool {
        self.prefixes.iter().any(|prefix| name.starts_with(prefix))
    }
}

fn identity_matches(pattern: &str, identity: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => identity.starts_with(prefix),
        None => pattern == identity,
    }
}

/// The cluster's rules, in the order they were given (the order does not
/// change what they allow), and its per-identity quotas.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRules {
    /// The rules; none means the open default (see the module docs).
    pub rules: Vec<AccessRule>,
    /// Quotas for the identities they name; for each quota, the first rule
    /// naming the identity and setting it counts, else the default
    /// ([`Quotas::defaults`]).
    pub quotas: Vec<QuotaRule>,
}

/// Quotas for the identities a rule names: how much of the cluster's state
/// all sessions of one identity together may hold. `None`: this rule does
/// not set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaRule {
    /// Identities, as in [`AccessRule::identities`].
    pub identities: Vec<String>,
    /// Live sessions.
    pub sessions: Option<u32>,
    /// Locks held and waited for.
    pub locks: Option<u32>,
    /// Elections led or campaigned in.
    pub elections: Option<u32>,
    /// Bytes of the values it leads or campaigns with, and of those its
    /// locks are held or waited for with.
    pub value_bytes: Option<u64>,
}

/// What one identity may hold at once, all its sessions together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Live sessions.
    pub sessions: u32,
    /// Locks held and waited for.
    pub locks: u32,
    /// Elections led or campaigned in.
    pub elections: u32,
    /// Bytes of the values it leads or campaigns with.
    pub value_bytes: u64,
}

impl Quotas {
    /// The quotas of an identity no quota rule names: a quarter of the
    /// cluster's sessions and elections, ten sessions' worth of locks, and
    /// a thousand of the largest values, so that no one identity can take
    /// what every other one needs.
    pub fn defaults(limits: &Limits) -> Quotas {
        Quotas {
            sessions: (limits.max_sessions / 4).max(1),
            locks: limits.max_locks_per_session.saturating_mul(10).max(1),
            elections: (limits.max_elections / 4).max(1),
            value_bytes: u64::from(limits.max_value_bytes)
                .saturating_mul(1000)
                .max(1),
        }
    }
}

/// Which quota an identity reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuotaKind {
    /// Live sessions.
    Sessions,
    /// Locks held and waited for.
    Locks,
    /// Elections led or campaigned in.
    Elections,
    /// Bytes of values.
    ValueBytes,
}

impl std::fmt::Display for QuotaKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QuotaKind::Sessions => "sessions",
            QuotaKind::Locks => "locks",
            QuotaKind::Elections => "elections",
            QuotaKind::ValueBytes => "bytes of values",
        })
    }
}

/// Why a set of rules cannot be installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRules {
    /// More rules than [`MAX_RULES`].
    #[error("{count} rules, more than the {max} a cluster holds: merge rules that share identities or prefixes")]
    TooMany {
        /// Rules given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A rule with no identity, no permission or no prefix allows nothing.
    #[error("rule {rule} names no {missing}: a rule needs identities, permissions and prefixes (\"\" for every name)")]
    Empty {
        /// The rule's position, from 1.
        rule: usize,
        /// What it lacks.
        missing: &'static str,
    },
    /// A quota rule that names no identity.
    #[error("quota rule {rule} names no identity: give it identities (\"*\" for everyone)")]
    EmptyQuota {
        /// The rule's position, from 1.
        rule: usize,
    },
    /// More identities or prefixes in one rule than [`MAX_ENTRIES_PER_RULE`].
    #[error("rule {rule} lists {count} {what}, more than {max}: split it")]
    TooManyEntries {
        /// The rule's position, from 1.
        rule: usize,
        /// Identities or prefixes.
        what: &'static str,
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// An identity pattern that no certificate could match as meant.
    #[error("rule {rule}: identity pattern {pattern:?} is invalid: use 1-{max} printable characters, with `*` only at the end")]
    BadIdentity {
        /// The rule's position, from 1.
        rule: usize,
        /// The pattern.
        pattern: String,
        /// The longest identity.
        max: usize,
    },
    /// A prefix longer than any name.
    #[error("rule {rule}: a prefix of {len} bytes is longer than any name ({max})")]
    PrefixTooLong {
        /// The rule's position, from 1.
        rule: usize,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The rules together take more than [`MAX_RULES_BYTES`].
    #[error("the rules take about {bytes} bytes, more than {max}: use shorter prefixes or identity patterns")]
    TooLarge {
        /// Their size bound.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

impl AccessRules {
    /// Whether the open default is in force (no rule given).
    pub fn is_open(&self) -> bool {
        self.rules.is_empty()
    }

    /// The quotas of `identity` (see [`AccessRules::quotas`]).
    pub fn quotas_for(&self, identity: &Identity, limits: &Limits) -> Quotas {
        let mut quotas = Quotas::defaults(limits);
        let mut set = [false; 4];
        for rule in self.quotas.iter().filter(|rule| {
            rule.identities
                .iter()
                .any(|pattern| identity_matches(pattern, identity.as_str()))
        }) {
            for (i, (field, value)) in [
                (&mut quotas.sessions, rule.sessions),
                (&mut quotas.locks, rule.locks),
                (&mut quotas.elections, rule.elections),
            ]
            .into_iter()
            .enumerate()
            {
                if let (false, Some(value)) = (set[i], value) {
                    *field = value;
                    set[i] = true;
                }
            }
            if let (false, Some(bytes)) = (set[3], rule.value_bytes) {
                quotas.value_bytes = bytes;
                set[3] = true;
            }
        }
        quotas
    }

    /// An upper bound on the rules' encoded size in bytes, on the log
    /// (postcard) and on the client wire (protobuf) alike: every string
    /// with a generous header, every permission two bytes, every rule a
    /// header.
    pub fn size_bound(&self) -> usize {
        let strings = |list: &[String]| list.iter().map(|s| s.len() + 4).sum::<usize>();
        let rules = self
            .rules
            .iter()
            .map(|rule| {
                16 + strings(&rule.identities)
                    + strings(&rule.prefixes)
                    + 2 * rule.permissions.len()
            })
            .sum::<usize>();
        let quotas = self
            .quotas
            .iter()
            .map(|rule| 48 + strings(&rule.identities))
            .sum::<usize>();
        rules + quotas + 16
    }

    /// Checks every bound; the machine refuses rules that break one, and
    /// the node refuses them before they cost a log entry.
    pub fn validate(&self) -> Result<(), InvalidRules> {
        for count in [self.rules.len(), self.quotas.len()] {
            if count > MAX_RULES {
                return Err(InvalidRules::TooMany {
                    count,
                    max: MAX_RULES,
                });
            }
        }
        for (i, rule) in self.quotas.iter().enumerate() {
            let at = i + 1;
            if rule.identities.is_empty() {
                return Err(InvalidRules::EmptyQuota { rule: at });
            }
            check_identities(at, &rule.identities)?;
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let at = i + 1;
            for (missing, empty) in [
                ("identity", rule.identities.is_empty()),
                ("permission", rule.permissions.is_empty()),
                ("prefix", rule.prefixes.is_empty()),
            ] {
                if empty {
                    return Err(InvalidRules::Empty { rule: at, missing });
                }
            }
            check_identities(at, &rule.identities)?;
            if rule.prefixes.len() > MAX_ENTRIES_PER_RULE {
                return Err(InvalidRules::TooManyEntries {
                    rule: at,
                    what: "prefixes",
                    count: rule.prefixes.len(),
                    max: MAX_ENTRIES_PER_RULE,
                });
            }
            if let Some(prefix) = rule.prefixes.iter().find(|p| p.len() > MAX_PREFIX_BYTES) {
                return Err(InvalidRules::PrefixTooLong {
                    rule: at,
                    len: prefix.len(),
                    max: MAX_PREFIX_BYTES,
                });
            }
        }
        let bytes = self.size_bound();
        if bytes > MAX_RULES_BYTES {
            return Err(InvalidRules::TooLarge {
                bytes,
                max: MAX_RULES_BYTES,
            });
        }
        Ok(())
    }
}

/// The identity patterns of rule `at`: not too many, each valid.
fn check_identities(at: usize, identities: &[String]) -> Result<(), InvalidRules> {
    if identities.len() > MAX_ENTRIES_PER_RULE {
        return Err(InvalidRules::TooManyEntries {
            rule: at,
            what: "identities",
            count: identities.len(),
            max: MAX_ENTRIES_PER_RULE,
        });
    }
    match identities.iter().find(|p| !valid_pattern(p)) {
        Some(pattern) => Err(InvalidRules::BadIdentity {
            rule: at,
            pattern: pattern.clone(),
            max: MAX_IDENTITY_BYTES,
        }),
        None => Ok(()),
    }
}

fn valid_pattern(pattern: &str) -> bool {
    let body = pattern.strip_suffix('*').unwrap_or(pattern);
    !pattern.is_empty()
        && pattern.len() <= MAX_IDENTITY_BYTES
        && !body.contains('*')
        && pattern.chars().all(|c| !c.is_control())
}

/// The identities the node config names as administrators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admins(BTreeSet<Identity>);

impl Admins {
    /// The administrators named `names`.
    pub fn new(names: impl IntoIterator<Item = Identity>) -> Admins {
        Admins(names.into_iter().collect())
    }

    /// Whether `identity` is one.
    pub fn contains(&self, identity: &Identity) -> bool {
        self.0.contains(identity)
    }
}

/// A request the rules do not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "identity {identity:?} lacks the `{permission}` permission on {name:?}: an administrator \
     grants it with `paxlock acl` (nothing was changed)"
)]
pub struct Denied {
    /// Who asked.
    pub identity: Identity,
    /// What it lacks.
    pub permission: Permission,
    /// On which name (`""`: the cluster).
    pub name: String,
}

/// Whether `caller` may do `permission` to `name` under `rules`, with
/// `admins` from the node config (the policy of the module docs).
pub fn check(
    rules: &AccessRules,
    admins: &Admins,
    caller: &Identity,
    permission: Permission,
    name: &str,
) -> Result<(), Denied> {
    if allows(rules, admins, caller, permission, name) {
        Ok(())
    } else {
        Err(Denied {
            identity: caller.clone(),
            permission,
            name: name.to_string(),
        })
    }
}

fn allows(
    rules: &AccessRules,
    admins: &Admins,
    caller: &Identity,
    permission: Permission,
    name: &str,
) -> bool {
    if admins.contains(caller) {
        return true;
    }
    if rules.is_open() {
        return permission != Permission::Admin;
    }
    #[cfg(feature = "canary")]
    if canary::open() {
        return permission != Permission::Admin;
    }
    rules.rules.iter().any(|rule| {
        rule.permissions.contains(&permission) && rule.names(caller) && rule.covers(name)
    })
}

/// Canary builds only: a switch that ignores the rules (every identity may
/// do everything but administer), so a test shows that its checks catch
/// requests the rules should have refused. Process-wide (the checks run on
/// any thread of a node); only a node process sets it, from
/// `PAXLOCK_CANARY=access-open`.
#[cfg(feature = "canary")]
pub mod canary {
    use std::sync::atomic::{AtomicBool, Ordering};

    static OPEN: AtomicBool = AtomicBool::new(false);

    /// Ignore the rules.
    pub fn set_open(on: bool) {
        OPEN.store(on, Ordering::Relaxed);
    }

    /// Whether the rules are ignored.
    pub fn open() -> bool {
        OPEN.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> Identity {
        Identity(name.to_string())
    }

    fn rule(identities: &[&str], permissions: &[Permission], prefixes: &[&str]) -> AccessRule {
        AccessRule {
            identities: identities.iter().map(|s| s.to_string()).collect(),
            permissions: permissions.iter().copied().collect(),
            prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn with_no_rules_everyone_locks_campaigns_and_reads_but_only_admins_administer() {
        let open = AccessRules::default();
        let admins = Admins::new([id("ops")]);
        for p in [Permission::Lock, Permission::Campaign, Permission::Read] {
            assert_eq!(check(&open, &admins, &id("app"), p, "x"), Ok(()));
        }
        let denied = check(&open, &admins, &id("app"), Permission::Admin, "");
        assert_eq!(denied.err().map(|d| d.permission), Some(Permission::Admin));
        assert_eq!(
            check(&open, &admins, &id("ops"), Permission::Admin, ""),
            Ok(())
        );
    }

    #[test]
    fn once_a_rule_exists_only_what_a_rule_allows_is_allowed() {
        let rules = AccessRules {
            quotas: Vec::new(),
            rules: vec![
                rule(
                    &["billing-*"],
                    &[Permission::Lock, Permission::Read],
                    &["billing/"],
                ),
                rule(&["reporter"], &[Permission::Read], &[""]),
            ],
        };
        let none = Admins::default();
        let ok = |who: &str, p, name: &str| check(&rules, &none, &id(who), p, name).is_ok();
        assert!(ok("billing-api", Permission::Lock, "billing/invoices"));
        assert!(ok("billing-", Permission::Lock, "billing/x"));
        assert!(!ok("billing-api", Permission::Lock, "orders/x"));
        assert!(!ok("billing-api", Permission::Campaign, "billing/x"));
        assert!(!ok("orders", Permission::Lock, "billing/x"));
        assert!(ok("reporter", Permission::Read, "anything"));
        assert!(!ok("reporter", Permission::Lock, "anything"));
        assert!(!ok("reporter2", Permission::Read, "anything"));
        let denied = check(&rules, &none, &id("orders"), Permission::Lock, "billing/x");
        let message = denied.err().map(|d| d.to_string()).unwrap_or_default();
        assert!(
            message.contains("`lock`") && message.contains("billing/x"),
            "{message}"
        );
    }

    #[test]
    fn configured_admins_may_do_everything_whatever_the_rules() {
        let rules = AccessRules {
            quotas: Vec::new(),
            rules: vec![rule(&["a"], &[Permission::Read], &["a/"])],
        };
        let admins = Admins::new([id("ops")]);
        for p in Permission::ALL {
            assert_eq!(check(&rules, &admins, &id("ops"), p, "z"), Ok(()));
        }
    }

    #[test]
    fn admin_on_the_empty_prefix_administers_the_cluster_on_a_longer_one_only_its_names() {
        let rules = AccessRules {
            quotas: Vec::new(),
            rules: vec![
                rule(&["root"], &[Permission::Admin], &[""]),
                rule(&["team"], &[Permission::Admin], &["team/"]),
            ],
        };
        let none = Admins::default();
        assert!(check(&rules, &none, &id("root"), Permission::Admin, "").is_ok());
        assert!(check(&rules, &none, &id("team"), Permission::Admin, "").is_err());
        assert!(check(&rules, &none, &id("team"), Permission::Admin, "team/x").is_ok());
    }

    #[test]
    fn rules_out_of_bounds_are_refused_with_what_is_wrong() {
        let bad = |rules: Vec<AccessRule>| {
            AccessRules {
                rules,
                quotas: Vec::new(),
            }
            .validate()
        };
        assert!(matches!(
            bad(vec![rule(&[], &[Permission::Read], &[""])]),
            Err(InvalidRules::Empty {
                rule: 1,
                missing: "identity"
            })
        ));
        assert!(matches!(
            bad(vec![rule(&["a*b"], &[Permission::Read], &[""])]),
            Err(InvalidRules::BadIdentity { .. })
        ));
        assert!(matches!(
            bad(vec![
                rule(&["a"], &[Permission::Read], &[""]);
                MAX_RULES + 1
            ]),
            Err(InvalidRules::TooMany { .. })
        ));
        let long = "p".repeat(MAX_PREFIX_BYTES + 1);
        assert!(matches!(
            bad(vec![rule(&["a"], &[Permission::Read], &[&long])]),
            Err(InvalidRules::PrefixTooLong { .. })
        ));
        let wide = "p".repeat(400);
        let many: Vec<&str> = vec![wide.as_str(); MAX_ENTRIES_PER_RULE];
        assert!(matches!(
            bad(vec![rule(&["a"], &[Permission::Read], &many); 2]),
            Err(InvalidRules::TooLarge { .. })
        ));
        assert_eq!(bad(vec![rule(&["*"], &[Permission::Read], &[""])]), Ok(()));
    }

    #[test]
    fn the_first_quota_rule_naming_an_identity_sets_each_quota_else_the_default() {
        let limits = Limits::default();
        let quota = |identities: &[&str], sessions, locks| QuotaRule {
            identities: identities.iter().map(|s| s.to_string()).collect(),
            sessions,
            locks,
            elections: None,
            value_bytes: None,
        };
        let rules = AccessRules {
            rules: Vec::new(),
            quotas: vec![
                quota(&["batch-*"], Some(5000), None),
                quota(&["*"], Some(10), Some(20)),
            ],
        };
        let defaults = Quotas::defaults(&limits);
        assert_eq!(defaults.sessions, limits.max_sessions / 4);
        let batch = rules.quotas_for(&id("batch-7"), &limits);
        assert_eq!((batch.sessions, batch.locks), (5000, 20));
        assert_eq!(batch.elections, defaults.elections);
        let other = rules.quotas_for(&id("web"), &limits);
        assert_eq!((other.sessions, other.locks), (10, 20));
        assert_eq!(
            AccessRules::default().quotas_for(&id("web"), &limits),
            defaults
        );
        let nobody = AccessRules {
            rules: Vec::new(),
            quotas: vec![quota(&[], Some(1), None)],
        };
        assert_eq!(nobody.validate(), Err(InvalidRules::EmptyQuota { rule: 1 }));
    }

    #[test]
    fn the_size_bound_holds_the_encoding_on_the_log() -> Result<(), postcard::Error> {
        let rules = AccessRules {
            quotas: Vec::new(),
            rules: vec![rule(&["a", "bb*"], &Permission::ALL, &["", "x/y/"]); MAX_RULES],
        };
        let encoded = postcard::to_allocvec(&rules)?;
        assert!(encoded.len() <= rules.size_bound());
        Ok(())
    }
}
