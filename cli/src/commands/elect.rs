//! `distsync elect NAME VALUE [--once] [--prefer] [--hand-over-on-request] [-- CMD
//! ARGS...]` and `distsync elect --listen NAME`.
//!
//! Staying leader is a loop of its own here rather than
//! [`distsync::Coordinator::lead_with`], whose shape does not fit a child process:
//! - `lead_with` drops its work the moment leadership is lost, whereas CMD must get
//!   SIGTERM and be waited for (SIGKILL by the session's client-side deadline), as
//!   [`child::run`] does, and the next campaign must not start before CMD has exited;
//! - when renewals fail, [`child::run`] stops CMD before the loss; the term must then be
//!   given up for a fresh session even if the renewals recover, and a `lead_with` work
//!   can end its term only by ending `lead_with` itself;
//! - SIGINT or SIGTERM while campaigning must close the session before distsync exits,
//!   not leave it to background tasks that the runtime's shutdown may cut short;
//! - each win and each loss is a line of distsync's own (standard output, standard
//!   error), whatever `RUST_LOG` filters.

use std::ffi::OsString;
use std::time::Duration;

use distsync::election::{PreferenceRequest, Successor};
use distsync::store::raw::Backoff;
use distsync::{Bytes, Coordinator, Error, FencingToken, Leadership, Name, Session};
use futures::StreamExt;

use crate::args::ElectArgs;
use crate::child::{self, ChildEnd, Stop};
use crate::context::{close, Ctx};
use crate::exit::{self, Failure};
use crate::hold::ENV_TOKEN;
use crate::output::{say, text};
use crate::wait::{race, Raced};

/// The environment variable that tells CMD the election's name.
const ENV_ELECTION: &str = "DISTSYNC_ELECTION";

/// The first pause before campaigning again (after a loss, or a store that did not
/// answer), doubled after each failure up to [`LONGEST_RETRY`], as
/// [`distsync::election::LeadOptions`] does by default.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest pause between two campaigns.
const LONGEST_RETRY: Duration = Duration::from_secs(5);
/// How long a hand-over waits for the candidates ahead of the requester to step back.
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `--prefer` waits for its own candidacy to show in the line before asking.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often `--prefer` reads the line while its candidacy is not listed yet.
const JOIN_POLL: Duration = Duration::from_millis(50);

/// The hand-over flags of `distsync elect`.
#[derive(Clone, Copy, Debug, Default)]
struct HandOverFlags {
    /// `--prefer`.
    prefer: bool,
    /// `--hand-over-on-request`.
    on_request: bool,
}

/// Campaigns with VALUE and prints `leader NAME value=<value> term=<term>` on every
/// win. With CMD, runs CMD while leader; without, holds until interrupted. Without
/// `--once`, every loss is reported on standard error and followed by a new campaign on
/// a fresh session; with `--once`, a loss ends the command (exit code 3). With
/// `--listen`, prints `<value> term=<term>` for the current leader and every change
/// until interrupted.
///
/// # Errors
/// See the exit codes in the crate docs.
pub(super) async fn run(ctx: &mut Ctx, args: ElectArgs) -> Result<u8, Failure> {
    let name = Name::new(args.name)?;
    let flags = HandOverFlags {
        prefer: args.prefer,
        on_request: args.hand_over_on_request,
    };
    match args.value {
        Some(value) if !args.listen => {
            let value = Bytes::from(value);
            if args.once {
                once(ctx, &name, &value, &args.command, flags).await
            } else {
                stay(ctx, &name, &value, &args.command, flags).await
            }
        }
        _ => {
            let session = ctx.session().await?;
            let outcome = listen(ctx, &session, &name).await;
            close(&session).await;
            outcome
        }
    }
}

/// How one term (a campaign on one session, and the leadership it won) ended.
enum Term {
    /// For good: distsync exits with this code (CMD's, or 130 when interrupted).
    Done(u8),
    /// The campaign or the leadership was lost in a way a fresh session may recover
    /// from: `--once` exits with `failure`, otherwise distsync campaigns again.
    Lost {
        /// What `--once` exits with; its message says what was lost.
        failure: Failure,
        /// The term that was lost, if this process had been elected.
        term: Option<FencingToken>,
    },
}

/// `--once`: one session, one campaign, one term.
async fn once(
    ctx: &mut Ctx,
    name: &Name,
    value: &Bytes,
    command: &[OsString],
    flags: HandOverFlags,
) -> Result<u8, Failure> {
    let session = ctx.session().await?;
    let outcome = term(ctx, &session, name, value, command, flags).await;
    close(&session).await;
    match outcome? {
        Term::Done(code) => Ok(code),
        Term::Lost { failure, .. } => Err(failure),
    }
}

/// Campaigns on a fresh session after every loss, until CMD exits by itself, distsync
/// is interrupted, or an error comes that a new session cannot fix.
async fn stay(
    ctx: &mut Ctx,
    name: &Name,
    value: &Bytes,
    command: &[OsString],
    flags: HandOverFlags,
) -> Result<u8, Failure> {
    let mut backoff = Backoff::new(FIRST_RETRY, LONGEST_RETRY);
    // Failed attempts are logged once, until the next win, not at every attempt.
    let mut failing = false;
    loop {
        let coordinator = ctx.coordinator.clone();
        let opened = race(
            coordinator.session_with(distsync::SessionOptions::with_ttl(ctx.ttl)),
            &mut ctx.interrupts,
            None,
        )
        .await;
        let session = match opened {
            Raced::Done(Ok(session)) => session,
            Raced::Done(Err(error)) if campaigns_again(&error) => {
                retrying(
                    &mut failing,
                    name,
                    "cannot open a session",
                    &error.to_string(),
                );
                pause(ctx, &mut backoff).await?;
                continue;
            }
            Raced::Done(Err(error)) => return Err(error.into()),
            Raced::Interrupted | Raced::Lost => return Err(Failure::interrupted()),
        };
        let outcome = term(ctx, &session, name, value, command, flags).await;
        close(&session).await;
        match outcome? {
            Term::Done(code) => return Ok(code),
            Term::Lost {
                failure,
                term: Some(term),
            } => {
                // A term was won: the store answers, so the pauses start again short.
                backoff.reset();
                failing = false;
                eprintln!(
                    "distsync: lost leadership of {name} (term {term}): {}; campaigning again",
                    failure.message
                );
            }
            Term::Lost {
                failure,
                term: None,
            } => retrying(&mut failing, name, "campaign failed", &failure.message),
        }
        pause(ctx, &mut backoff).await?;
    }
}

/// Logs a failed attempt before the next: a warning for the first (while `failing` is
/// false), then debug lines until the next win, so that a long outage does not fill
/// standard error.
fn retrying(failing: &mut bool, name: &Name, what: &str, error: &str) {
    if std::mem::replace(failing, true) {
        tracing::debug!(election = %name, error, "{what}; retrying");
    } else {
        tracing::warn!(election = %name, error, "{what}; retrying");
    }
}

/// Whether a fresh session may succeed where `error` failed: a lost session or
/// leadership, or a store that did not answer (as [`distsync::Coordinator::lead_with`]
/// decides). Anything else (an unsupported election, a TTL the backend refuses) ends
/// the command.
fn campaigns_again(error: &Error) -> bool {
    error.is_transient() || matches!(error, Error::SessionLost | Error::NotLeader)
}

/// Waits for the backoff's next pause before campaigning again.
///
/// # Errors
/// Exit code 130 when SIGINT or SIGTERM comes first (nothing is held meanwhile).
async fn pause(ctx: &mut Ctx, backoff: &mut Backoff) -> Result<(), Failure> {
    let sleep = async {
        tokio::time::sleep(backoff.next_pause()).await;
        Ok::<_, Error>(())
    };
    match race(sleep, &mut ctx.interrupts, None).await {
        Raced::Done(_) => Ok(()),
        Raced::Interrupted | Raced::Lost => Err(Failure::interrupted()),
    }
}

/// Campaigns on `session` (with `--prefer`, asking the leader to hand over once in
/// line), prints the leader line once elected, and leads while CMD runs (without CMD:
/// until interrupted), then resigns; with `--hand-over-on-request`, a candidate's
/// request ends the term early and the leadership goes to that candidate.
///
/// # Errors
/// Exit code 130 when interrupted while campaigning, CMD's spawn failure (126, 127),
/// a failure to resign, or a campaign error no fresh session can fix.
async fn term(
    ctx: &mut Ctx,
    session: &Session,
    name: &Name,
    value: &Bytes,
    command: &[OsString],
    flags: HandOverFlags,
) -> Result<Term, Failure> {
    // The coordinator's election: its candidates step back for a named successor.
    let election = ctx.coordinator.election(session, name.as_str())?;
    let coordinator = ctx.coordinator.clone();
    let campaign = async {
        let campaign = election.campaign(value.clone());
        if !flags.prefer {
            return campaign.await;
        }
        tokio::pin!(campaign);
        let ask = ask_to_be_preferred(&coordinator, session, name);
        tokio::pin!(ask);
        let mut asked = false;
        loop {
            tokio::select! {
                won = &mut campaign => return won,
                () = &mut ask, if !asked => asked = true,
            }
        }
    };
    let leadership = match race(campaign, &mut ctx.interrupts, Some(session)).await {
        Raced::Done(Ok(leadership)) => leadership,
        Raced::Done(Err(error)) if campaigns_again(&error) => {
            return Ok(Term::Lost {
                failure: error.into(),
                term: None,
            })
        }
        Raced::Done(Err(error)) => return Err(error.into()),
        Raced::Interrupted => return Err(Failure::interrupted()),
        Raced::Lost => {
            return Ok(Term::Lost {
                failure: Failure::session_lost("while waiting"),
                term: None,
            })
        }
    };
    let term = leadership.term();
    say!("leader {name} value={} term={term}", text(value));
    let lost = |what: &str| {
        Ok(Term::Lost {
            failure: Failure::session_lost(what),
            term: Some(term),
        })
    };
    let request = std::sync::Arc::new(std::sync::Mutex::new(None::<PreferenceRequest>));
    let requested = flags
        .on_request
        .then(|| watch_requests(&leadership, std::sync::Arc::clone(&request)));
    if command.is_empty() {
        let requested = async move {
            match requested {
                Some(requested) => requested.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ctx.interrupts.recv() => {}
            () = leadership.lost() => return lost("while leader"),
            () = requested => {
                hand_over(leadership, name, taken(&request)).await?;
                return Ok(Term::Done(0));
            }
        }
        resign(leadership).await?;
        return Ok(Term::Done(exit::INTERRUPTED));
    }
    let stop = Stop {
        lost: leadership.lost(),
        health: session.health_watch(),
        grace: ctx.grace,
        requested,
    };
    let env = [
        (ENV_TOKEN, term.to_string()),
        (ENV_ELECTION, name.to_string()),
    ];
    let code = match child::run(command, &env, None, stop, &mut ctx.interrupts).await {
        Ok(ChildEnd::Exited(code)) => code,
        Ok(ChildEnd::Interrupted) => exit::INTERRUPTED,
        // CMD has exited. The leadership, if not lost yet (renewals failing), goes
        // with the session, which the caller closes.
        Ok(ChildEnd::Lost) => {
            return lost("while the command was running (or its renewals failed); it was stopped")
        }
        Err(failure) => {
            resign(leadership).await?;
            return Err(failure);
        }
    };
    match taken(&request) {
        Some(request) => hand_over(leadership, name, Some(request)).await?,
        None => resign(leadership).await?,
    }
    Ok(Term::Done(code))
}

/// `--prefer`: waits (bounded) until this candidacy is listed in the line, then asks
/// the leader to hand over to it; reports the outcome on standard error. Never fails:
/// the campaign goes on whatever the request's fate.
async fn ask_to_be_preferred(coordinator: &Coordinator, session: &Session, name: &Name) {
    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    loop {
        match coordinator.candidates(name.as_str()).await {
            Ok(line)
                if line
                    .leader
                    .as_ref()
                    .is_some_and(|(c, _)| c.session == session.id()) =>
            {
                return
            }
            Ok(line) if line.position(session.id()).is_some() => break,
            Ok(_) => {}
            Err(error) => {
                eprintln!("distsync: cannot ask to be preferred in {name}: {error}");
                return;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "distsync: not asking to be preferred in {name}: never saw this candidacy in line"
            );
            return;
        }
        tokio::time::sleep(JOIN_POLL).await;
    }
    match coordinator.prefer(name.as_str(), session.id()).await {
        Ok(Some(request)) => eprintln!(
            "distsync: asked the leader of {name} (term {}) to hand over to session {}",
            request.term, request.candidate
        ),
        Ok(None) => {}
        Err(error) => eprintln!("distsync: cannot ask to be preferred in {name}: {error}"),
    }
}

/// `--hand-over-on-request`: resolves once a candidate asks for the leadership, having
/// put its request in `slot`. Never resolves where requests cannot be watched.
fn watch_requests(
    leadership: &Leadership,
    slot: std::sync::Arc<std::sync::Mutex<Option<PreferenceRequest>>>,
) -> futures::future::BoxFuture<'static, ()> {
    let requested = leadership.preference_requested();
    Box::pin(async move {
        match requested.await {
            Ok(request) => {
                *slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(request);
            }
            Err(error) => {
                tracing::warn!(%error, "preference requests cannot be watched");
                std::future::pending::<()>().await;
            }
        }
    })
}

/// The request `slot` holds, if any.
fn taken(slot: &std::sync::Mutex<Option<PreferenceRequest>>) -> Option<PreferenceRequest> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
}

/// Hands the leadership to the requester (or, when the hand-over cannot happen,
/// resigns) and says which on standard error.
///
/// # Errors
/// As [`resign`].
async fn hand_over(
    leadership: Leadership,
    name: &Name,
    request: Option<PreferenceRequest>,
) -> Result<(), Failure> {
    let Some(request) = request else {
        return resign(leadership).await;
    };
    match leadership
        .resign_to(Successor::Candidate(request.candidate), HAND_OVER_TIMEOUT)
        .await
    {
        Ok(handed) => {
            eprintln!(
                "distsync: handed {name} (term {}) over to {}",
                handed.from_term, handed.to
            );
            Ok(())
        }
        Err(failed) => {
            eprintln!(
                "distsync: could not hand {name} over to session {}: {}; resigning",
                request.candidate, failed.error
            );
            match failed.leadership {
                Some(leadership) => resign(leadership).await,
                None => Err(Failure::from(failed.error)),
            }
        }
    }
}

/// Resigns, letting the next candidate in.
///
/// # Errors
/// Exit code 3 when the leadership had been lost before, else the store's error.
async fn resign(leadership: Leadership) -> Result<(), Failure> {
    leadership.resign().await.map_err(|error| match error {
        Error::SessionLost => Failure::session_lost("before resigning"),
        other => Failure::from(other),
    })
}

async fn listen(ctx: &mut Ctx, session: &Session, name: &Name) -> Result<u8, Failure> {
    let election = ctx.coordinator.backend().election(session, name.clone())?;
    let mut leaders = election.observe();
    loop {
        let next = ctx
            .wait(async { leaders.next().await.transpose() }, Some(session))
            .await?;
        match next {
            Some(leader) => say!("{} term={}", text(&leader.value), leader.term),
            None => return Err(Failure::failed("the leader stream ended")),
        }
    }
}
