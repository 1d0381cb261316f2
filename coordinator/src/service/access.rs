//! Access rules in the client wire's terms: the rules a request carries,
//! the rules an answer shows, and how a refusal is told and logged.

use std::collections::BTreeSet;

use paxlock::proto::{self, ErrorCode};
use paxlock_core::access::{AccessRule, AccessRules, Denied, Permission, QuotaRule};

use super::errors::error;
use super::state::Shared;

/// The rules and quotas a `SetAccessRules` request carries; an unset
/// permission is a malformed request (bounds are the core's to check).
pub fn rules_from_wire(
    rules: &[proto::AccessRule],
    quotas: &[proto::QuotaRule],
) -> Result<AccessRules, proto::Error> {
    let rules = rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let permissions = rule
                .permissions
                .iter()
                .map(|&p| permission_from_wire(p, i + 1))
                .collect::<Result<BTreeSet<_>, _>>()?;
            Ok(AccessRule {
                identities: rule.identities.clone(),
                permissions,
                prefixes: rule.prefixes.clone(),
            })
        })
        .collect::<Result<Vec<_>, proto::Error>>()?;
    let quotas = quotas
        .iter()
        .map(|q| QuotaRule {
            identities: q.identities.clone(),
            sessions: q.sessions,
            locks: q.locks,
            elections: q.elections,
            value_bytes: q.value_bytes,
        })
        .collect();
    Ok(AccessRules { rules, quotas })
}

fn permission_from_wire(value: i32, rule: usize) -> Result<Permission, proto::Error> {
    match proto::Permission::try_from(value) {
        Ok(proto::Permission::Lock) => Ok(Permission::Lock),
        Ok(proto::Permission::Campaign) => Ok(Permission::Campaign),
        Ok(proto::Permission::Read) => Ok(Permission::Read),
        Ok(proto::Permission::Admin) => Ok(Permission::Admin),
        Ok(proto::Permission::Unspecified) | Err(_) => Err(error(
            ErrorCode::InvalidRequest,
            format!("rule {rule} names permission {value}, which is none of lock, campaign, read, admin"),
            false,
        )),
    }
}

/// The answer showing `rules` at `version`.
pub fn rules_to_wire(rules: &AccessRules, version: u64) -> proto::AccessRulesOk {
    let wire = |p: &Permission| match p {
        Permission::Lock => proto::Permission::Lock,
        Permission::Campaign => proto::Permission::Campaign,
        Permission::Read => proto::Permission::Read,
        Permission::Admin => proto::Permission::Admin,
    };
    proto::AccessRulesOk {
        rules: rules
            .rules
            .iter()
            .map(|rule| proto::AccessRule {
                identities: rule.identities.clone(),
                permissions: rule.permissions.iter().map(|p| wire(p).into()).collect(),
                prefixes: rule.prefixes.clone(),
            })
            .collect(),
        version,
        quotas: rules
            .quotas
            .iter()
            .map(|q| proto::QuotaRule {
                identities: q.identities.clone(),
                sessions: q.sessions,
                locks: q.locks,
                elections: q.elections,
                value_bytes: q.value_bytes,
            })
            .collect(),
    }
}

/// A request the rules refused, logged (a few lines a second, with the
/// identity) and told to the client as `PERMISSION_DENIED`.
pub fn denied(shared: &Shared, denied: &Denied) -> proto::Error {
    shared.denials_log.warn(format_args!(
        "refused {:?}: no `{}` permission on {:?}",
        denied.identity.as_str(),
        denied.permission,
        denied.name
    ));
    error(ErrorCode::PermissionDenied, denied.to_string(), false)
}
