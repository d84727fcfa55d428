//! `distsync schedule NAME EVERY -- CMD`: cron plus flock for a fleet.

use std::time::{SystemTime, UNIX_EPOCH};

use distsync::replicas::{JobOptions, Missed, Occurrence, Schedule};
use distsync::{Name, SessionOptions};

use crate::args::ScheduleArgs;
use crate::child::{self, ChildEnd, Stop};
use crate::context::Ctx;
use crate::duration;
use crate::exit::{self, Failure};
use crate::hold::{ENV_KEY, ENV_TOKEN};
use crate::output::say;

/// The environment variable that tells CMD its occurrence's scheduled time, in
/// milliseconds since the UNIX epoch.
const ENV_OCCURRENCE: &str = "DISTSYNC_OCCURRENCE_MS";
/// The environment variable that tells CMD when its run started, as the job's record in
/// the store has it, in milliseconds since the UNIX epoch: the start `--at-least` is
/// judged by (the process that starts CMD reads its clock later, by the time a fork
/// and exec take).
const ENV_STARTED: &str = "DISTSYNC_STARTED_MS";
/// The environment variable that tells CMD the previous run's occurrence (empty before
/// the job's first run): with `--catch-up`, what this run stands for starts after it.
const ENV_PREVIOUS: &str = "DISTSYNC_PREVIOUS_OCCURRENCE_MS";

/// Runs CMD for every occurrence this process wins, until SIGINT or SIGTERM (exit
/// code 130). A CMD that fails or is stopped is reported on standard error and the
/// schedule goes on; a CMD that cannot be started (126, 127) ends it.
///
/// # Errors
/// See the exit codes in the crate docs.
pub(super) async fn run(ctx: &mut Ctx, args: ScheduleArgs) -> Result<u8, Failure> {
    let name = Name::new(args.name)?;
    let schedule = parse_every(&args.every)?;
    let capabilities = ctx.coordinator.capabilities();
    // The library's default TTL (at_most, within the backend's minimum and 15 s), and
    // no longer than --ttl.
    let ttl = ctx
        .ttl
        .min(args.at_most)
        .min(distsync::session::DEFAULT_TTL)
        .max(capabilities.min_session_ttl);
    let mut options = JobOptions::default()
        .with_at_most(args.at_most)
        .with_session(SessionOptions::with_ttl(ttl));
    if let Some(at_least) = args.at_least {
        options = options.with_at_least(at_least);
    }
    if args.catch_up {
        options = options.with_missed(Missed::CatchUp);
    }
    if let Some(late) = args.skip_after {
        options = options.with_grace(late);
    }
    let mut job = ctx
        .coordinator
        .scheduled_job(name.as_str(), schedule.clone(), options)?;
    if args.status {
        let last = ctx.wait(job.last_run(), None).await?;
        let next = schedule
            .next_after(SystemTime::now())
            .map_or_else(|| "-".to_owned(), |at| unix_millis(at).to_string());
        match last {
            Some(last) => say!(
                "job {name} last={} started={} token={} runs={} next={next}",
                unix_millis(last.occurrence),
                unix_millis(last.started),
                last.token,
                last.runs
            ),
            None => say!("job {name} last=- started=- token=- runs=0 next={next}"),
        }
        return Ok(exit::OK);
    }
    loop {
        let occurrence = tokio::select! {
            _ = ctx.interrupts.recv() => return Ok(exit::INTERRUPTED),
            next = job.next() => next?,
        };
        let end = run_once(ctx, &name, &occurrence, &args.command).await;
        let key = occurrence.job().to_owned();
        if let Err(error) = occurrence.finish().await {
            tracing::warn!(job = %key, %error, "releasing the job's lock");
        }
        match end? {
            ChildEnd::Exited(0) => {}
            ChildEnd::Exited(code) => {
                tracing::warn!(job = %name, code, "the command failed; the schedule goes on");
            }
            ChildEnd::Lost => tracing::warn!(
                job = %name,
                "the command was stopped: the job's lock was lost or --at-most passed",
            ),
            ChildEnd::Interrupted => return Ok(exit::INTERRUPTED),
        }
    }
}

/// Announces `occurrence` and runs CMD for it, stopped as `lock -- CMD` is.
async fn run_once(
    ctx: &mut Ctx,
    name: &Name,
    occurrence: &Occurrence,
    command: &[std::ffi::OsString],
) -> Result<ChildEnd, Failure> {
    let at = unix_millis(occurrence.time());
    let token = occurrence.token();
    say!("{name} occurrence={at} token={token}");
    let env = [
        (ENV_KEY, name.as_str().to_owned()),
        (ENV_TOKEN, token.to_string()),
        (ENV_OCCURRENCE, at.to_string()),
        (ENV_STARTED, unix_millis(occurrence.started()).to_string()),
        (
            ENV_PREVIOUS,
            occurrence
                .previous()
                .map(|previous| unix_millis(previous).to_string())
                .unwrap_or_default(),
        ),
    ];
    let stop = Stop {
        lost: occurrence.lost(),
        health: occurrence.session().health_watch(),
        grace: ctx.grace,
        requested: None,
    };
    child::run(command, &env, None, stop, &mut ctx.interrupts).await
}

fn unix_millis(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis())
}

/// EVERY: a duration (`30s`, the unit required) or, failing that, a cron expression.
fn parse_every(every: &str) -> Result<Schedule, Failure> {
    match duration::positive(every) {
        Ok(interval) => Ok(Schedule::every(interval)?),
        Err(as_duration) => Schedule::cron(every).map_err(|as_cron| {
            Failure::usage(format!(
                "EVERY {every:?} is neither a duration ({as_duration}) nor a cron expression ({as_cron})"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_is_a_duration_or_a_cron_expression() {
        assert_eq!(
            parse_every("30s").unwrap().interval(),
            Some(Duration::from_secs(30))
        );
        // A bare number is neither: its unit is required.
        assert_eq!(parse_every("5").unwrap_err().code, exit::USAGE);
        assert_eq!(parse_every("*/5 * * * *").unwrap().interval(), None);
        assert_eq!(parse_every("soon").unwrap_err().code, exit::USAGE);
    }
}
