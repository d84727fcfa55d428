//! `distsync elect NAME VALUE` and `distsync elect --listen NAME`.

use distsync::{Bytes, Name, Session};
use futures::StreamExt;

use crate::args::ElectArgs;
use crate::context::{close, Ctx};
use crate::exit::{self, Failure};
use crate::output::{say, text};

/// Campaigns with VALUE, prints `leader NAME value=<value> term=<term>` once elected and
/// holds leadership until interrupted (then resigns); or, with `--listen`, prints
/// `<value> term=<term>` for the current leader and every change until interrupted.
///
/// # Errors
/// See the exit codes in the crate docs.
pub(super) async fn run(ctx: &mut Ctx, args: ElectArgs) -> Result<u8, Failure> {
    let name = Name::new(args.name)?;
    let session = ctx.session().await?;
    let outcome = match args.value {
        Some(value) if !args.listen => campaign(ctx, &session, &name, value).await,
        _ => listen(ctx, &session, &name).await,
    };
    close(&session).await;
    outcome
}

async fn campaign(
    ctx: &mut Ctx,
    session: &Session,
    name: &Name,
    value: String,
) -> Result<u8, Failure> {
    let election = ctx.coordinator.backend().election(session, name.clone())?;
    let leadership = ctx
        .wait(election.campaign(Bytes::from(value.clone())), Some(session))
        .await?;
    say!("leader {name} value={value} term={}", leadership.term());
    tokio::select! {
        _ = ctx.interrupts.recv() => {}
        () = leadership.lost() => return Err(Failure::session_lost("while leader")),
    }
    match leadership.resign().await {
        Ok(()) => Ok(exit::INTERRUPTED),
        Err(distsync::Error::SessionLost) => Err(Failure::session_lost("before resigning")),
        Err(error) => Err(error.into()),
    }
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
