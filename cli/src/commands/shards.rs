//! `distsync shards NAME COUNT -- CMD`.

use std::time::Duration;

use distsync::replicas::{OwnedShards, ShardOptions, ShardPin};
use distsync::session::Lost;
use distsync::SessionOptions;

use crate::args::ShardsArgs;
use crate::child::{self, ChildEnd, Stop};
use crate::context::Ctx;
use crate::exit::Failure;
use crate::output::say;
use crate::wait::{race, Raced};

/// Takes part in the sharded group and runs CMD with the shards owned, one run per
/// owned set: prints `shards NAME member=<id> owned=<list>` before each run.
///
/// - The set grows: CMD gets SIGTERM (its shards stay held) and starts again with the
///   new set once it has exited.
/// - A shard goes to another member or is lost: CMD gets SIGTERM, then SIGKILL as
///   `lock -- CMD` gets it (by the session's client-side deadline once renewals fail);
///   the shard is released to its next owner only once CMD has exited.
/// - CMD exits by itself: distsync leaves the group and exits with CMD's code.
/// - SIGINT or SIGTERM: forwarded to CMD; distsync then leaves the group (exit 130).
///
/// # Errors
/// See the exit codes in the crate docs.
pub(super) async fn run(ctx: &mut Ctx, args: ShardsArgs) -> Result<u8, Failure> {
    let member = match args.member {
        Some(member) => member,
        None => default_member(),
    };
    let options = ShardOptions::default()
        .with_session(SessionOptions::with_ttl(ctx.ttl))
        .with_poll(args.poll)
        .with_metadata(args.metadata);
    ctx.coordinator
        .capabilities()
        .check_session(options.session())?;
    let shards = ctx
        .coordinator
        .shards(&args.name, &member, args.count, options)?;
    let mut changes = shards.changes();
    let outcome = loop {
        let owned = match race(
            changes.wait_for(|owned| !owned.is_empty()),
            &mut ctx.interrupts,
            None,
        )
        .await
        {
            Raced::Done(Ok(owned)) => owned.clone(),
            Raced::Done(Err(_closed)) => break Err(Failure::failed("the shard loop ended")),
            Raced::Interrupted | Raced::Lost => break Err(Failure::interrupted()),
        };
        let Some(session) = shards.session() else {
            continue;
        };
        let mut pins = Vec::with_capacity(owned.len());
        for shard in owned.shards() {
            match shards.pin(shard).await {
                Ok(pin) => pins.push(pin),
                // Ending already: the next owned set is on its way.
                Err(_) => break,
            }
        }
        if pins.len() != owned.len() {
            drop(pins);
            if changes.changed().await.is_err() {
                break Err(Failure::failed("the shard loop ended"));
            }
            continue;
        }
        say!(
            "shards {} member={member} owned={}",
            args.name,
            list(&owned)
        );
        let env = environment(&owned, args.count, &member);
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.clone())).collect();
        let started = owned.clone();
        let mut changed = changes.clone();
        let restart = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let restarting = restart.clone();
        let stop = Stop {
            lost: any_ended(&pins),
            health: session.health_watch(),
            grace: ctx.grace,
            requested: Some(Box::pin(async move {
                if changed.wait_for(|now| *now != started).await.is_err() {
                    std::future::pending::<()>().await;
                }
                restarting.store(true, std::sync::atomic::Ordering::SeqCst);
            })),
        };
        let end = child::run(&args.command, &env, None, stop, &mut ctx.interrupts).await;
        drop(pins);
        match end {
            Ok(ChildEnd::Exited(_)) if restart.load(std::sync::atomic::Ordering::SeqCst) => {
                tracing::info!(group = %args.name, "the owned shards changed: the command starts again");
            }
            Ok(ChildEnd::Exited(code)) => break Ok(code),
            Ok(ChildEnd::Interrupted) => break Err(Failure::interrupted()),
            Ok(ChildEnd::Lost) => {
                tracing::info!(group = %args.name, "the owned shards changed: the command starts again");
            }
            Err(failure) => break Err(failure),
        }
    };
    match tokio::time::timeout(LEAVE_TIMEOUT, shards.stop()).await {
        Ok(()) => {}
        Err(_) => tracing::warn!("leaving the group timed out; the session's lease ends it"),
    }
    outcome
}

/// How long releasing the shards and leaving may take at the end.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Resolves when any of `pins` ends (a release to another member, or a loss).
fn any_ended(pins: &[ShardPin]) -> Lost {
    let ended: Vec<Lost> = pins.iter().map(ShardPin::ended).collect();
    Lost::from_future(async move {
        futures::future::select_all(ended).await;
    })
}

/// The owned shards as `0,5,9`.
fn list(owned: &OwnedShards) -> String {
    owned
        .shards()
        .map(|shard| shard.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// CMD's environment for `owned`.
fn environment(owned: &OwnedShards, count: u32, member: &str) -> [(&'static str, String); 4] {
    let tokens = owned
        .iter()
        .map(|(shard, token)| format!("{shard}:{token}"))
        .collect::<Vec<_>>()
        .join(",");
    [
        ("DISTSYNC_SHARDS", list(owned)),
        ("DISTSYNC_SHARD_TOKENS", tokens),
        ("DISTSYNC_SHARD_COUNT", count.to_string()),
        ("DISTSYNC_MEMBER", member.to_owned()),
    ]
}

/// `<host name>-<process id>`: unique among live members on a fleet whose hosts have
/// distinct names.
fn default_member() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|host| host.trim().replace('/', "-"))
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    format!("{host}-{}", std::process::id())
}
