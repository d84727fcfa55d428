//! `distsync migrate --from URL --to URL [--dry-run] [--force]`: copies the durable state
//! of one store into another with [`distsync::store::migrate`] and prints what it did.

use distsync::store::{migrate, MigrateOptions, MigrationReport};
use distsync::{Coordinator, Error};

use crate::args::MigrateArgs;
use crate::exit::{self, code_of, Failure};
use crate::output::say;
use crate::signals::Interrupts;
use crate::wait::{race, Raced};

/// Connects to both stores, migrates, and prints
/// `queues=N items=N stm_keys=N barriers=N counters=N latches=N active_holds=N dry_run=BOOL`
/// then `verified`
/// (or `dry run: nothing written`).
///
/// Cancel-safety: an interrupt during the copy leaves part of the state copied; the
/// message (exit code 130) says so.
///
/// # Errors
/// Exit code 2 for a bad URL, a backend not compiled in or one that cannot export, or
/// the same URL twice; 4 when the source has live holds (without `--force`), a store
/// fails, or the verification finds a difference; 130 when interrupted.
pub(super) async fn run(args: MigrateArgs, interrupts: &mut Interrupts) -> Result<u8, Failure> {
    // Two `memory://` URLs are two fresh stores; any other URL given twice is one store.
    if args.from.trim() == args.to.trim() && !args.from.trim().starts_with("memory:") {
        return Err(Failure::usage(
            "--from and --to name the same store: a migration into its own source would \
             append every queue to itself",
        ));
    }
    let connecting =
        async { tokio::join!(distsync::connect(&args.from), distsync::connect(&args.to)) };
    let (from, to) = match race(connecting, interrupts, None).await {
        Raced::Done(connected) => connected,
        Raced::Interrupted | Raced::Lost => return Err(Failure::interrupted()),
    };
    let (from, to) = match (side("--from", from), side("--to", to)) {
        (Ok(from), Ok(to)) => (from, to),
        // A usage error (a bad URL) is reported before a store that did not answer.
        (Err(from), Err(to)) if to.code == exit::USAGE && from.code != exit::USAGE => {
            return Err(to)
        }
        (Err(failure), _) | (_, Err(failure)) => return Err(failure),
    };
    tracing::debug!(
        from = from.capabilities().backend,
        to = to.capabilities().backend,
        "connected"
    );
    let options = MigrateOptions {
        dry_run: args.dry_run,
        force: args.force,
    };
    let report = match race(
        migrate(&**from.backend(), &**to.backend(), &options),
        interrupts,
        None,
    )
    .await
    {
        Raced::Done(Ok(report)) => report,
        Raced::Done(Err(error)) => return Err(failure(error)),
        Raced::Interrupted | Raced::Lost if args.dry_run => return Err(Failure::interrupted()),
        Raced::Interrupted | Raced::Lost => {
            return Err(Failure {
                code: exit::INTERRUPTED,
                message: "interrupted while copying: the destination may hold part of the \
                          source's state (queues are appended to); check it before running \
                          the migration again"
                    .into(),
            })
        }
    };
    say!("{}", summary(&report));
    if report.dry_run {
        say!("dry run: nothing written");
    } else {
        say!("verified");
    }
    Ok(exit::OK)
}

/// A connection's outcome, its failure naming the flag of the URL.
fn side(flag: &str, connected: distsync::Result<Coordinator>) -> Result<Coordinator, Failure> {
    connected.map_err(|error| Failure {
        code: code_of(&error),
        message: format!("{flag}: {error}"),
    })
}

/// The result line.
fn summary(report: &MigrationReport) -> String {
    format!(
        "queues={} items={} stm_keys={} barriers={} counters={} latches={} active_holds={} \
         dry_run={}",
        report.queues,
        report.queue_items,
        report.stm_keys,
        report.barriers,
        report.counters,
        report.latches,
        report.active_holds,
        report.dry_run
    )
}

/// The failure of a migration that ran: live holds and a failed verification are
/// operation failures (4), whatever their error variant.
fn failure(error: Error) -> Failure {
    match error {
        Error::ActiveHolders { count, example } => Failure::failed(format!(
            "refusing to migrate: the source has {count} active hold{} (e.g. {example}); stop \
             its clients (or let their sessions expire) and run again, or pass --force to copy \
             the durable state anyway (holds are never copied)",
            if count == 1 { "" } else { "s" }
        )),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_result_line_is_stable() {
        let report = MigrationReport {
            queues: 2,
            queue_items: 9,
            stm_keys: 3,
            barriers: 1,
            counters: 4,
            latches: 5,
            active_holds: 0,
            dry_run: true,
        };
        assert_eq!(
            summary(&report),
            "queues=2 items=9 stm_keys=3 barriers=1 counters=4 latches=5 active_holds=0 \
             dry_run=true"
        );
    }

    #[test]
    fn refusals_and_verification_failures_are_operation_failures() {
        let refused = failure(Error::ActiveHolders {
            count: 2,
            example: "busy/694d".into(),
        });
        assert_eq!(refused.code, exit::FAILED);
        assert!(refused.message.contains("2 active holds"));
        assert!(refused.message.contains("busy/694d"));
        assert!(refused.message.contains("--force"));
        let mismatch = failure(Error::MigrationMismatch("x".into()));
        assert_eq!(mismatch.code, exit::FAILED);
        assert_eq!(
            failure(Error::unsupported("x", "export (migration)")).code,
            exit::USAGE
        );
    }
}
