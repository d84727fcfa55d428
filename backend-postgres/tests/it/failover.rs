//! PostgreSQL failover: the conformance case `server_primary_failover_promoted`
//! against private primaries with a streaming standby
//! (`distsync_conformance::faults::postgres_standby::PostgresStandbyPair`): the primary
//! stopped with `pg_ctl stop -m immediate` under lock, election and queue load, the
//! standby promoted and the clients' proxy pointed at it. Needs
//! `DISTSYNC_POSTGRES_URL` for the harness's own server (skipped loudly when unset; a
//! failure under `CI=true`) and PostgreSQL's server binaries for the private pair.
//!
//! With a synchronous standby (`synchronous_standby_names`) the case must hold:
//! nothing acknowledged is lost, holders do not hold silently, tokens grow. With an
//! asynchronous one it is measured (PostgreSQL declares `survives_failover: false`).

use std::time::Duration;

use distsync_conformance::{connector, run_promoted_failover, Outcome, PromotedStore, Report};

/// Runs the case against a pair (`synchronous` or not); `None` without a server.
fn failover(synchronous: bool) -> Option<Report> {
    let connect = connector(|url| async move { distsync_postgres::backend(&url).await });
    run_promoted_failover(
        PromotedStore::Postgres,
        "DISTSYNC_POSTGRES_URL",
        connect,
        synchronous,
        Duration::from_secs(90),
    )
}

/// A synchronous standby: everything acknowledged is on the promoted standby.
#[test]
fn promoted_synchronous_standby_loses_nothing() {
    if let Some(report) = failover(true) {
        assert_eq!(
            report.declared,
            Some(true),
            "a primary with a synchronous standby declares survives_failover: {report}"
        );
        assert!(
            matches!(report.outcome, Outcome::Holds { .. }),
            "with a synchronous standby nothing may break: {report}"
        );
    }
}

/// An asynchronous standby: measured and reported (declared not to survive), and the
/// lock never stuck. A release or a withdrawn wait the standby lacks comes back as an
/// entry of a session that lives on; the clients see the timeline move after a primary
/// that did not wait for a standby and lose their sessions, whose entries then expire.
#[test]
fn promoted_asynchronous_standby_is_measured() {
    if let Some(report) = failover(false) {
        assert_eq!(report.declared, Some(false), "{report}");
        if let Outcome::Violated { evidence } = &report.outcome {
            assert!(
                !evidence.contains("the lock stuck"),
                "grants must resume after the promotion: {report}"
            );
        }
    }
}
