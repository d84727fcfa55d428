//! MySQL/MariaDB failover: the conformance case `server_primary_failover_promoted`
//! against private MariaDB primaries with a GTID replica
//! (`distsync_conformance::faults::mariadb_replica::MariadbReplicaPair`): the primary
//! SIGKILLed under lock, election and queue load, the replica promoted once it has
//! applied what it received, and the clients' proxy pointed at it. Needs
//! `DISTSYNC_MYSQL_URL` for the harness's own server (skipped loudly when unset) and
//! MariaDB's server, installer and client for the private pair.
//!
//! With semi-synchronous replication (`AFTER_SYNC`) the backend declares
//! `survives_failover` and the case must hold: nothing acknowledged is lost, holders
//! do not hold silently, tokens grow. With asynchronous replication (the replica
//! paused before the kill, so that it lags) the backend declares it false and the
//! case measures what breaks.

use std::time::Duration;

use distsync_conformance::{connector, run_promoted_failover, Outcome, PromotedStore, Report};

/// Runs the case against a pair (`semi_sync` or not); `None` without a server.
fn failover(semi_sync: bool) -> Option<Report> {
    let connect = connector(|url| async move { distsync_mysql::backend(&url).await });
    run_promoted_failover(
        PromotedStore::Mariadb,
        "DISTSYNC_MYSQL_URL",
        connect,
        semi_sync,
        Duration::from_secs(120),
    )
}

/// Semi-synchronous replication: everything acknowledged is on the promoted replica.
#[test]
fn promoted_semi_synchronous_replica_loses_nothing() {
    if let Some(report) = failover(true) {
        assert_eq!(
            report.declared,
            Some(true),
            "a semi-synchronous AFTER_SYNC primary declares survives_failover: {report}"
        );
        assert!(
            matches!(report.outcome, Outcome::Holds { .. }),
            "with semi-synchronous replication nothing may break: {report}"
        );
    }
}

/// Asynchronous replication, the replica paused before the kill: declared not to
/// survive, and measured breaking. The writes the primary acknowledged while the
/// replica lagged (a second of a contended lock: grants, releases, renewals,
/// enqueues) are gone, so the revision counter, and the lock tokens with it, goes
/// back on the promoted replica.
#[test]
fn promoted_asynchronous_replica_is_measured() {
    if let Some(report) = failover(false) {
        assert_eq!(report.declared, Some(false), "{report}");
        assert!(
            matches!(report.outcome, Outcome::Violated { .. }),
            "a promoted asynchronous replica that lagged loses acknowledged writes: {report}"
        );
    }
}
