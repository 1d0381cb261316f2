//! Access control on real `paxlock serve` processes: rules set with
//! `paxlock acl` by the administrator the node config names, requests of
//! other identities refused by them (`PERMISSION_DENIED` naming the
//! permission and the name, nothing changed, the refusal logged with the
//! identity), rule changes in force for sessions and watches already open,
//! and certificates that may not act as clients.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::cluster::{ProcessCluster, PAXLOCK};
use common::{TestResult, PATIENCE};
use paxlock::proto::ErrorCode;

const TTL: Duration = Duration::from_secs(30);

/// Runs `paxlock acl ARGS` against the cluster as its administrator.
fn acl(cluster: &ProcessCluster, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let out = Command::new(PAXLOCK)
        .arg("acl")
        .args(args)
        .arg("--client-config")
        .arg(cluster.client_config())
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "paxlock acl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn write(path: &Path, text: &str) -> TestResult {
    std::fs::write(path, text)?;
    Ok(())
}

/// The server's code for a failed call.
fn code<T: std::fmt::Debug>(result: &Result<T, paxlock::Error>) -> Option<ErrorCode> {
    result.as_ref().err().and_then(paxlock::Error::code)
}

fn denied_naming<T: std::fmt::Debug>(
    result: &Result<T, paxlock::Error>,
    permission: &str,
    name: &str,
) -> bool {
    let message = result
        .as_ref()
        .err()
        .map(ToString::to_string)
        .unwrap_or_default();
    code(result) == Some(ErrorCode::PermissionDenied)
        && message.contains(&format!("`{permission}`"))
        && message.contains(name)
}

#[test]
fn rules_set_by_the_administrator_decide_what_each_identity_may_do() -> TestResult {
    let cluster = ProcessCluster::start_administered(3)?;
    cluster.issue_client("billing-api")?;
    cluster.issue_client("orders")?;
    let rules = cluster.dir.path().join("rules.toml");
    write(
        &rules,
        r#"
[[rule]]
identities = ["billing-*"]
permissions = ["lock", "campaign", "read"]
prefixes = ["billing/"]

[[rule]]
identities = ["orders"]
permissions = ["lock"]
prefixes = ["orders/"]

[[quota]]
identities = ["orders"]
locks = 1

[[quota]]
identities = ["billing-*"]
value_bytes = 4
"#,
    )?;
    // No rules yet: the open default, printed as such.
    assert!(acl(&cluster, &["get"])?.contains("no rules"));
    let set = acl(&cluster, &["set", &rules.to_string_lossy()])?;
    assert!(set.contains("2 rule(s), 2 quota rule(s)"), "{set}");
    let got = acl(&cluster, &["get"])?;
    let read_back = paxlock::AccessRules::from_toml(&got)?;
    assert_eq!(read_back.rules.len(), 2, "{got}");
    assert_eq!(read_back.quotas.len(), 2, "{got}");
    assert!(read_back.version > 0, "{got}");

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let billing = cluster.client_as("billing-api", TTL).await?;
        let orders = cluster.client_as("orders", TTL).await?;
        let admin = cluster.client(TTL).await?;

        let held = billing
            .lock("billing/invoices")
            .try_acquire()
            .await?
            .ok_or("busy")?;
        let stolen = billing.lock("orders/queue").try_acquire().await;
        assert!(denied_naming(&stolen, "lock", "orders/queue"), "{stolen:?}");
        let leadership = billing
            .election("billing/leader")
            .campaign(b"b".to_vec())
            .await?;
        let hijack = orders
            .election("billing/leader")
            .campaign(b"o".to_vec())
            .await;
        assert!(
            denied_naming(&hijack, "campaign", "billing/leader"),
            "{hijack:?}"
        );
        let peek = orders.election("billing/leader").leader().await;
        assert!(denied_naming(&peek, "read", "billing/leader"), "{peek:?}");
        let not_admin = billing.access_rules().await;
        assert!(denied_naming(&not_admin, "admin", ""), "{not_admin:?}");
        let orders_lock = orders
            .lock("orders/queue")
            .try_acquire()
            .await?
            .ok_or("busy")?;
        // Billing's values may take 4 bytes: it leads with 1.
        let big = billing.election("billing/big").campaign(vec![0; 10]).await;
        assert_eq!(code(&big), Some(ErrorCode::QuotaExceeded), "{big:?}");
        // Its quota: one lock, all its sessions together.
        let second = orders.lock("orders/second").try_acquire().await;
        assert_eq!(code(&second), Some(ErrorCode::QuotaExceeded), "{second:?}");
        // The refused requests changed nothing.
        let info = admin
            .election("billing/leader")
            .leader()
            .await?
            .ok_or("no leader")?;
        assert_eq!(info.identity, "billing-api");
        assert_eq!(info.term, leadership.term());
        assert!(held.is_valid() && orders_lock.is_valid());

        // A watch the rules allow, open while they change, of an election
        // the administrator leads.
        let run = admin
            .election("billing/run")
            .campaign(b"a".to_vec())
            .await?;
        let mut watch = billing.election("billing/run").watch();
        let first = tokio::time::timeout(PATIENCE, watch.next()).await??;
        assert!(format!("{first:?}").contains("dev-client"), "{first:?}");

        // The administrator narrows billing to `lock`: the open session may
        // no longer campaign or read, and its watch ends at the next event.
        let narrowed = paxlock::AccessRules {
            rules: vec![paxlock::AccessRule {
                identities: vec!["billing-*".into()],
                permissions: vec![paxlock::Permission::Lock],
                prefixes: vec!["billing/".into()],
            }],
            ..Default::default()
        };
        // Against an old version, the change is refused.
        let stale = admin
            .set_access_rules(&narrowed, Some(read_back.version - 1))
            .await;
        assert_eq!(
            code(&stale),
            Some(ErrorCode::AccessRulesChanged),
            "{stale:?}"
        );
        admin
            .set_access_rules(&narrowed, Some(read_back.version))
            .await?;
        let again = billing
            .election("billing/other")
            .campaign(b"b".to_vec())
            .await;
        assert!(
            denied_naming(&again, "campaign", "billing/other"),
            "{again:?}"
        );
        billing.lock("billing/more").try_acquire().await?;
        // Now no rule lets orders lock either: it is refused in its open session.
        let refused = orders.lock("orders/other").try_acquire().await;
        assert!(
            denied_naming(&refused, "lock", "orders/other"),
            "{refused:?}"
        );
        run.proclaim(b"next".to_vec()).await?;
        let ended = tokio::time::timeout(PATIENCE, async {
            loop {
                match watch.next().await {
                    Ok(_) => continue,
                    Err(e) => return e,
                }
            }
        })
        .await?;
        assert_eq!(ended.code(), Some(ErrorCode::PermissionDenied), "{ended}");
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    // Each refusal was logged with the identity that asked, on the leader.
    let logs: String = (1..=3).map(|id| cluster.log(id)).collect();
    assert!(
        logs.contains("refused \"orders\": no `lock` permission on \"orders/other\""),
        "no refusal in the logs"
    );
    // Clearing restores the open default.
    acl(&cluster, &["clear"])?;
    assert!(acl(&cluster, &["get"])?.contains("no rules"));
    Ok(())
}

#[test]
fn without_an_administrator_in_the_config_nobody_changes_the_rules() -> TestResult {
    let cluster = ProcessCluster::start(3)?;
    let rules = cluster.dir.path().join("rules.toml");
    write(
        &rules,
        "[[rule]]\nidentities = [\"*\"]\npermissions = [\"read\"]\nprefixes = [\"\"]\n",
    )?;
    let refused = acl(&cluster, &["set", &rules.to_string_lossy()]);
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("PermissionDenied") && message.contains("`admin`"),
        "{message}"
    );
    // And the cluster still serves every identity as before.
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let client = cluster.client(TTL).await?;
        client.lock("anything").try_acquire().await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}

/// How a raw client's connection was closed: the application code and
/// reason.
async fn closed_with(
    client: &common::RawClient,
) -> Result<(u32, String), Box<dyn std::error::Error>> {
    let closed = tokio::time::timeout(PATIENCE, client.connection.closed()).await?;
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => Ok((
            u32::try_from(u64::from(close.error_code))?,
            String::from_utf8_lossy(&close.reason).into_owned(),
        )),
        other => Err(format!("closed otherwise: {other}").into()),
    }
}

#[test]
fn a_revoked_identity_or_certificate_is_cut_off_without_a_restart() -> TestResult {
    use paxlock::wire::codes::CERTIFICATE_REVOKED;
    let mut cluster = ProcessCluster::prepare(3, "[access]\nrevocations = \"revoked.toml\"\n")?;
    let revoked = cluster.dir.path().join("revoked.toml");
    write(&revoked, "# nothing revoked yet\n")?;
    for id in 1..=3 {
        cluster.spawn(id)?;
    }
    cluster.wait_ready(&[1, 2, 3])?;
    cluster.issue_client("mallory")?;
    cluster.issue_client("alice")?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let leader = cluster.leader().await?;
        let mallory = cluster.raw_client(leader, "mallory").await?;
        let alice = cluster.raw_client(leader, "alice").await?;
        let hello = || paxlock::proto::request::Op::Hello(paxlock::proto::Hello::default());
        for client in [&mallory, &alice] {
            let answer = client.ask_op(0, 1, hello()).await?;
            assert!(answer.error.is_none(), "{answer:?}");
        }

        // The identity, revoked while its connection is open.
        write(&revoked, "identities = [\"mallory\"]\n")?;
        let (code, reason) = closed_with(&mallory).await?;
        assert_eq!(code, CERTIFICATE_REVOKED, "{reason}");
        assert!(reason.contains("mallory"), "{reason}");
        // A new connection is refused the same way, on every node.
        for id in 1..=3 {
            let again = cluster.raw_client(id, "mallory").await?;
            assert_eq!(closed_with(&again).await?.0, CERTIFICATE_REVOKED);
        }
        // Alice is served as before.
        let answer = alice.ask_op(0, 2, hello()).await?;
        assert!(answer.error.is_none(), "{answer:?}");

        // One certificate, by serial: alice's, in `openssl x509 -serial`
        // spelling; a bad edit of the file keeps the list in force.
        let pem = std::fs::read(cluster.launched.certs_dir().join("client-alice.pem"))?;
        let der = x509_parser::pem::parse_x509_pem(&pem)?.1.contents;
        let serial = paxlock_certs::certificate_serial(&der).ok_or("no serial")?;
        let spelled: Vec<String> = serial
            .as_bytes()
            .chunks(2)
            .map(|pair| String::from_utf8_lossy(pair).to_lowercase())
            .collect();
        write(&revoked, "identities = [\"mallory\"\n")?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let still = cluster.raw_client(leader, "mallory").await?;
        assert_eq!(
            closed_with(&still).await?.0,
            CERTIFICATE_REVOKED,
            "a bad file opened up"
        );
        write(
            &revoked,
            &format!(
                "identities = [\"mallory\"]\nserials = [\"{}\"]\n",
                spelled.join(":")
            ),
        )?;
        let (code, reason) = closed_with(&alice).await?;
        assert_eq!(code, CERTIFICATE_REVOKED, "{reason}");
        // Named without leading zeros, as serials are compared (one in
        // sixteen random serials starts with a zero digit).
        assert!(reason.contains(serial.trim_start_matches('0')), "{reason}");
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}

/// Rules that give `orders` only `lock` on `orders/`, set through the
/// client library by the administrator; then every kind of request
/// `orders` may not make, made: what got through.
async fn breaches(cluster: &ProcessCluster) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let admin = cluster.client(TTL).await?;
    let rules = paxlock::AccessRules {
        rules: vec![paxlock::AccessRule {
            identities: vec!["orders".into()],
            permissions: vec![paxlock::Permission::Lock],
            prefixes: vec!["orders/".into()],
        }],
        ..Default::default()
    };
    admin.set_access_rules(&rules, None).await?;
    let _held = admin
        .election("billing/leader")
        .campaign(b"a".to_vec())
        .await?;
    let orders = cluster.client_as("orders", TTL).await?;
    let mut through = Vec::new();
    if orders.lock("billing/x").try_acquire().await.is_ok() {
        through.push("lock billing/x".to_string());
    }
    let campaign = orders.election("billing/other").candidate(b"o".to_vec());
    if campaign
        .timeout(Duration::from_secs(1))
        .campaign()
        .await
        .is_ok()
    {
        through.push("campaign billing/other".into());
    }
    if orders.election("billing/leader").leader().await.is_ok() {
        through.push("read billing/leader".into());
    }
    if orders.access_rules().await.is_ok() {
        through.push("admin: read the rules".into());
    }
    Ok(through)
}

#[test]
fn no_request_outside_the_rules_gets_through() -> TestResult {
    let cluster = ProcessCluster::start_administered(3)?;
    cluster.issue_client("orders")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let through = runtime.block_on(breaches(&cluster))?;
    assert!(through.is_empty(), "got through: {through:?}");
    Ok(())
}

/// The canary: nodes that ignore the rules (`PAXLOCK_CANARY=access-open`)
/// let the same requests through, and the check above sees it.
#[cfg(feature = "canary")]
#[test]
fn nodes_that_ignore_the_rules_are_caught() -> TestResult {
    let cluster = ProcessCluster::start_spec(3, "", |spec| {
        spec.admins(&[paxlock_launcher::DEV_CLIENT])
            .env("PAXLOCK_CANARY", Some("access-open"))
    })?;
    cluster.issue_client("orders")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let through = runtime.block_on(breaches(&cluster))?;
    assert!(
        through.iter().any(|b| b.starts_with("lock")) && through.len() >= 3,
        "the canary went unnoticed: {through:?}"
    );
    // Administration stays closed even then.
    assert!(
        !through.iter().any(|b| b.starts_with("admin")),
        "{through:?}"
    );
    Ok(())
}
