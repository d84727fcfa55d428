//! `distsync group NAME members|watch`.

use futures::StreamExt as _;

use distsync::replicas::{GroupChange, Member};

use crate::args::{GroupAction, GroupArgs};
use crate::context::Ctx;
use crate::exit::{self, Failure};
use crate::output::{say, text};

/// `members`: prints one `member ID session=<id> token=<token> metadata=<value>` line per
/// live member, sorted by id. `watch`: prints every member present as `joined ...`, then
/// each change as `joined ...` or `left ...`, until interrupted (exit 130).
///
/// # Errors
/// See the exit codes in the crate docs.
pub(super) async fn run(ctx: &mut Ctx, args: GroupArgs) -> Result<u8, Failure> {
    let group = ctx.coordinator.group(&args.name)?.with_poll(args.poll);
    match args.action {
        GroupAction::Members => {
            let members = ctx.wait(group.members(), None).await?;
            for member in &members {
                say!("member {}", describe(member));
            }
            Ok(exit::OK)
        }
        GroupAction::Watch => {
            let mut changes = group.changes();
            loop {
                let next = async { changes.next().await.transpose() };
                match ctx.wait(next, None).await? {
                    Some(GroupChange::Joined(member)) => say!("joined {}", describe(&member)),
                    Some(GroupChange::Left(member)) => say!("left {}", describe(&member)),
                    Some(_) => {}
                    None => return Ok(exit::OK),
                }
            }
        }
    }
}

/// `ID session=<id> token=<token> metadata=<value>`, `-` for what the store does not
/// record.
fn describe(member: &Member) -> String {
    format!(
        "{} session={} token={} metadata={}",
        member.id,
        member.session.as_deref().unwrap_or("-"),
        member
            .token
            .map_or_else(|| "-".to_owned(), |token| token.to_string()),
        text(&member.metadata),
    )
}
