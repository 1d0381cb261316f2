//! The cluster's access rules as an administrator reads and writes them
//! (`Client::access_rules`, `Client::set_access_rules`, `paxlock acl`).
//!
//! A rule lets identities (exact names, or patterns ending in `*`) do
//! permissions (`lock`, `campaign`, `read`, `admin`) to every name under a
//! prefix. With no rules every identity may lock, campaign and read; once
//! any rule exists, what no rule allows is refused (`PERMISSION_DENIED`).
//! Administrators named in the nodes' config may always do everything.
//! See `PROTOCOL.md`, "Access control".

use serde::{Deserialize, Serialize};

use crate::client::{unexpected, Client};
use crate::error::Error;
use crate::proto::{self, request::Op, response};

/// What a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Acquire, release, renew, cancel locks.
    Lock,
    /// Campaign, proclaim, resign in elections.
    Campaign,
    /// Query and watch elections.
    Read,
    /// Administer (on the prefix `""`: the whole cluster, rules included).
    Admin,
}

impl Permission {
    fn to_wire(self) -> proto::Permission {
        match self {
            Permission::Lock => proto::Permission::Lock,
            Permission::Campaign => proto::Permission::Campaign,
            Permission::Read => proto::Permission::Read,
            Permission::Admin => proto::Permission::Admin,
        }
    }

    fn from_wire(value: i32) -> Result<Permission, Error> {
        match proto::Permission::try_from(value) {
            Ok(proto::Permission::Lock) => Ok(Permission::Lock),
            Ok(proto::Permission::Campaign) => Ok(Permission::Campaign),
            Ok(proto::Permission::Read) => Ok(Permission::Read),
            Ok(proto::Permission::Admin) => Ok(Permission::Admin),
            _ => Err(Error::Protocol(format!(
                "the cluster sent permission {value}, which this client does not know: upgrade it"
            ))),
        }
    }
}

/// One rule: `identities` may do `permissions` to every name starting
/// with one of `prefixes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// Identities (client certificate names), exactly or by a pattern
    /// ending in `*` (`"*"`: everyone).
    pub identities: Vec<String>,
    /// What they may do.
    pub permissions: Vec<Permission>,
    /// Name prefixes (`""`: every name).
    pub prefixes: Vec<String>,
}

/// How much all sessions of the identities a quota rule names may hold
/// together (`[[quota]]` in a rules file); an unset quota is left to the
/// next rule naming the identity, or the cluster's default (a quarter of
/// its sessions and elections, ten sessions' worth of locks, a thousand of
/// the largest values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaRule {
    /// Identities, as in [`AccessRule::identities`].
    pub identities: Vec<String>,
    /// Live sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<u32>,
    /// Locks held and waited for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locks: Option<u32>,
    /// Elections led or campaigned in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elections: Option<u32>,
    /// Bytes of the values it leads or campaigns with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_bytes: Option<u64>,
}

impl QuotaRule {
    fn to_wire(&self) -> proto::QuotaRule {
        proto::QuotaRule {
            identities: self.identities.clone(),
            sessions: self.sessions,
            locks: self.locks,
            elections: self.elections,
            value_bytes: self.value_bytes,
        }
    }

    fn from_wire(q: proto::QuotaRule) -> QuotaRule {
        QuotaRule {
            identities: q.identities,
            sessions: q.sessions,
            locks: q.locks,
            elections: q.elections,
            value_bytes: q.value_bytes,
        }
    }
}

/// The rules in force and their version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRules {
    /// The version (the log revision that set them; 0: never set). Give it
    /// to [`Client::set_access_rules`] to change exactly these rules.
    #[serde(default)]
    pub version: u64,
    /// The rules (`[[rule]]` tables in a rules file).
    #[serde(default, rename = "rule")]
    pub rules: Vec<AccessRule>,
    /// Per-identity quotas (`[[quota]]` tables).
    #[serde(default, rename = "quota")]
    pub quotas: Vec<QuotaRule>,
}

impl AccessRules {
    /// Parses a rules file: `[[rule]]` tables with `identities`,
    /// `permissions` and `prefixes` (and, optionally, the `version` it was
    /// read at).
    pub fn from_toml(text: &str) -> Result<AccessRules, Error> {
        toml::from_str(text).map_err(|e| Error::Config(format!("access rules: {e}")))
    }

    /// The rules as a rules file.
    pub fn to_toml(&self) -> Result<String, Error> {
        toml::to_string_pretty(self).map_err(|e| Error::Config(format!("access rules: {e}")))
    }

    fn from_wire(ok: proto::AccessRulesOk) -> Result<AccessRules, Error> {
        let rules = ok
            .rules
            .into_iter()
            .map(|rule| {
                Ok(AccessRule {
                    identities: rule.identities,
                    permissions: rule
                        .permissions
                        .into_iter()
                        .map(Permission::from_wire)
                        .collect::<Result<_, Error>>()?,
                    prefixes: rule.prefixes,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(AccessRules {
            version: ok.version,
            rules,
            quotas: ok.quotas.into_iter().map(QuotaRule::from_wire).collect(),
        })
    }
}

impl Client {
    /// The cluster's access rules (an administrator's request).
    pub async fn access_rules(&self) -> Result<AccessRules, Error> {
        let op = Op::GetAccessRules(proto::GetAccessRules {});
        rules_answer(self.inner.call(0, op).await?)
    }

    /// Replaces the cluster's access rules and quotas with those of `rules`
    /// (an administrator's request; its `version` is ignored); no rules
    /// restore the open default. With `expected_version`, only if the rules
    /// in force are still at that version (else `ACCESS_RULES_CHANGED`:
    /// another administrator changed them since). Answers the rules now in
    /// force.
    pub async fn set_access_rules(
        &self,
        rules: &AccessRules,
        expected_version: Option<u64>,
    ) -> Result<AccessRules, Error> {
        let op = Op::SetAccessRules(proto::SetAccessRules {
            quotas: rules.quotas.iter().map(QuotaRule::to_wire).collect(),
            rules: rules
                .rules
                .iter()
                .map(|rule| proto::AccessRule {
                    identities: rule.identities.clone(),
                    permissions: rule
                        .permissions
                        .iter()
                        .map(|p| p.to_wire().into())
                        .collect(),
                    prefixes: rule.prefixes.clone(),
                })
                .collect(),
            expected_version,
        });
        rules_answer(self.inner.call(0, op).await?)
    }
}

fn rules_answer(result: response::Result) -> Result<AccessRules, Error> {
    match result {
        response::Result::AccessRules(ok) => AccessRules::from_wire(ok),
        other => Err(unexpected(&other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rules_file_reads_and_writes_back_the_same() -> Result<(), Error> {
        let text = r#"
            [[rule]]
            identities = ["billing-*", "ops"]
            permissions = ["lock", "read"]
            prefixes = ["billing/"]

            [[rule]]
            identities = ["*"]
            permissions = ["read"]
            prefixes = [""]

            [[quota]]
            identities = ["batch-*"]
            sessions = 5000
        "#;
        let rules = AccessRules::from_toml(text)?;
        assert_eq!(rules.rules.len(), 2);
        assert_eq!(rules.quotas[0].sessions, Some(5000));
        assert_eq!(rules.quotas[0].locks, None);
        assert_eq!(
            rules.rules[0].permissions,
            [Permission::Lock, Permission::Read]
        );
        assert_eq!(AccessRules::from_toml(&rules.to_toml()?)?, rules);
        Ok(())
    }

    #[test]
    fn a_misspelt_permission_or_key_is_an_error_naming_it() {
        let bad = r#"
            [[rule]]
            identities = ["a"]
            permissions = ["write"]
            prefixes = [""]
        "#;
        let err = AccessRules::from_toml(bad).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("write")),
            "{err:?}"
        );
        let typo = "[[rule]]\nidentity = [\"a\"]\npermissions = []\nprefixes = []\n";
        assert!(AccessRules::from_toml(typo).is_err());
    }
}
