//! Group membership and shard ownership on the memory store: the assignment every
//! member computes, the moves a join makes, the hand-over of a stopped member's shards,
//! and that a shard is never released while work on it is pinned.

use std::collections::BTreeMap;
use std::time::Duration;

use distsync::replicas::{assign, ShardOptions, ShardWork, Shards, SHARDS_SEGMENT};
use distsync::store::memory::MemoryBackend;
use distsync::{Coordinator, Error, FencingToken};
use tokio::time::timeout;

/// How long any expected change may take (the memory store answers at once; the loops
/// read the member list every 50 ms).
const DEADLINE: Duration = Duration::from_secs(10);

fn options() -> ShardOptions {
    ShardOptions::default().with_poll(Duration::from_millis(50))
}

/// Each member's owned shards with their tokens, read one member after another.
fn read_owned(members: &[&Shards]) -> Vec<BTreeMap<u32, FencingToken>> {
    members
        .iter()
        .map(|member| member.owned().iter().collect())
        .collect()
}

/// Waits, with the deadline, until `members` own every shard once, as [`assign`] gives
/// it for their current holds (a stable, balanced assignment), and no member waits for
/// a shard any more (a wait started on an older read of the group, before the last
/// change, is stopped at the member's next read; one still queued could win the shard
/// at the next change and move it twice); returns the owners.
///
/// The members are read one after another, not at one instant, so a shard that moves
/// from the first member read to a later one between the reads shows under both. A
/// shard counts as owned twice only when two members show it with the same token in
/// two reads in a row: each read of a member falls between the same member's two reads
/// in the other pass, so both holds (one hold per token) lasted across a common instant.
async fn settled(
    coordinator: &Coordinator,
    members: &[&Shards],
) -> BTreeMap<u32, (String, FencingToken)> {
    let count = members[0].count();
    let ids: Vec<&str> = members.iter().map(|m| m.member()).collect();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut previous = read_owned(members);
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let current = read_owned(members);
        let mut kept: BTreeMap<u32, Vec<(&str, FencingToken)>> = BTreeMap::new();
        for ((id, before), now) in ids.iter().zip(&previous).zip(&current) {
            for (shard, token) in now {
                if before.get(shard) == Some(token) {
                    kept.entry(*shard).or_default().push((id, *token));
                }
            }
        }
        let twice: Vec<_> = kept.iter().filter(|(_, owners)| owners.len() > 1).collect();
        assert!(twice.is_empty(), "a shard owned twice: {twice:?}");
        let owners: BTreeMap<u32, (String, FencingToken)> = ids
            .iter()
            .zip(&current)
            .flat_map(|(id, owned)| {
                owned
                    .iter()
                    .map(move |(shard, token)| (*shard, ((*id).to_owned(), *token)))
            })
            .collect();
        let held: BTreeMap<u32, &str> = owners.iter().map(|(s, (m, _))| (*s, m.as_str())).collect();
        let total: usize = current.iter().map(BTreeMap::len).sum();
        if current == previous
            && total == count as usize
            && owners.len() == count as usize
            && assign(&ids, &held, count) == held
            && !waiting(coordinator, members[0].group()).await
        {
            return owners;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never settled: {owners:?}"
        );
        previous = current;
    }
}

/// Whether the store lists a waiter on any of `group`'s shards' locks.
async fn waiting(coordinator: &Coordinator, group: &str) -> bool {
    let report = coordinator
        .status(&format!("{group}/"))
        .await
        .expect("the memory store's status");
    let shards = format!("{group}/{SHARDS_SEGMENT}/");
    report
        .lines
        .iter()
        .any(|line| line.name.starts_with(&shards) && !line.waiters.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_lists_its_members_and_reports_joins_and_leaves() -> distsync::Result<()> {
    use futures::StreamExt as _;
    let coordinator = Coordinator::new(MemoryBackend::new());
    let group = coordinator
        .group("workers")?
        .with_poll(Duration::from_millis(20));
    let mut changes = group.changes();
    let first = coordinator.session().await?;
    let second = coordinator.session().await?;
    let a = group.join(&first, "a", "zone-1").await?;
    let b = group.join(&second, "b", "zone-2").await?;
    let listed = group.members().await?;
    let ids: Vec<_> = listed
        .iter()
        .map(|m| (m.id.as_str(), m.metadata.clone()))
        .collect();
    assert_eq!(ids, [("a", "zone-1".into()), ("b", "zone-2".into())]);

    let mut joined = Vec::new();
    while joined.len() < 2 {
        match timeout(DEADLINE, changes.next())
            .await
            .expect("a change")
            .expect("open")?
        {
            distsync::replicas::GroupChange::Joined(member) => joined.push(member.id),
            other => panic!("unexpected {other:?}"),
        }
    }
    joined.sort();
    assert_eq!(joined, ["a", "b"]);

    a.set_metadata("zone-3").await?;
    assert_eq!(group.members().await?[0].metadata, "zone-3");
    // A session that ends takes its member out, as a crash would.
    second.close().await?;
    assert!(b.is_lost() || timeout(DEADLINE, b.lost()).await.is_ok());
    match timeout(DEADLINE, changes.next())
        .await
        .expect("a change")
        .expect("open")?
    {
        distsync::replicas::GroupChange::Left(member) => assert_eq!(member.id, "b"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(group.members().await?.len(), 1);
    a.leave().await?;
    assert!(group.members().await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_join_under_one_id_waits_for_the_first_to_leave() -> distsync::Result<()> {
    let coordinator = Coordinator::new(MemoryBackend::new());
    let group = coordinator.group("workers")?;
    let old = coordinator.session().await?;
    let new = coordinator.session().await?;
    let first = group.join(&old, "a", "old").await?;
    let waiting = group.join(&new, "a", "new");
    tokio::pin!(waiting);
    assert!(
        timeout(Duration::from_millis(200), &mut waiting)
            .await
            .is_err(),
        "two live members under one id"
    );
    first.leave().await?;
    let second = timeout(DEADLINE, waiting).await.expect("joined")?;
    assert_eq!(group.members().await?[0].metadata, "new");
    second.leave().await
}

#[tokio::test]
async fn bad_groups_and_members_are_typed_errors() -> distsync::Result<()> {
    let coordinator = Coordinator::new(MemoryBackend::new());
    let session = coordinator.session().await?;
    let group = coordinator.group("workers")?;
    assert!(matches!(
        group.join(&session, "a/b", "").await,
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        coordinator.group("/x"),
        Err(Error::InvalidName { .. })
    ));
    for count in [0, distsync::replicas::MAX_SHARDS + 1] {
        assert!(matches!(
            coordinator.shards("workers", "a", count, options()),
            Err(Error::InvalidArgument(_))
        ));
    }
    assert!(matches!(
        coordinator.shards("workers", "a/b", 8, options()),
        Err(Error::InvalidName { .. })
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_own_the_rendezvous_assignment_and_a_join_moves_few_shards() -> distsync::Result<()>
{
    const COUNT: u32 = 64;
    let coordinator = Coordinator::new(MemoryBackend::new());
    let a = coordinator.shards("index", "a", COUNT, options())?;
    let b = coordinator.shards("index", "b", COUNT, options())?;
    let c = coordinator.shards("index", "c", COUNT, options())?;
    let owners = settled(&coordinator, &[&a, &b, &c]).await;
    assert_eq!(owners.len(), COUNT as usize, "every shard owned once");
    let before: u64 = [&a, &b, &c].iter().map(|m| m.counts().acquired).sum();

    let d = coordinator.shards("index", "d", COUNT, options())?;
    settled(&coordinator, &[&a, &b, &c, &d]).await;
    let moves: u64 = [&a, &b, &c, &d]
        .iter()
        .map(|m| m.counts().acquired)
        .sum::<u64>()
        - before;
    let moved_to_d = d.owned().len() as u64;
    assert_eq!(moves, moved_to_d, "only the shards d wins move");
    assert!(
        moves <= u64::from(COUNT.div_ceil(4)) + 1,
        "{moves} moves for one join"
    );
    // A new owner's token is above the old owner's.
    for (shard, token) in d.owned().iter() {
        assert!(
            token > owners[&shard].1,
            "shard {shard}: {token} after {}",
            owners[&shard].1
        );
    }

    // A stopped member's shards go to the others.
    d.stop().await;
    let after_leave = settled(&coordinator, &[&a, &b, &c]).await;
    let kept = after_leave
        .iter()
        .filter(|(shard, (member, _))| owners.get(shard).is_some_and(|(was, _)| was == member))
        .count();
    assert!(
        kept >= (COUNT - COUNT.div_ceil(4)) as usize,
        "a leave moved more than the leaver's shards"
    );
    a.stop().await;
    b.stop().await;
    c.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_shard_is_released_only_once_its_work_stops() -> distsync::Result<()> {
    const COUNT: u32 = 16;
    let coordinator = Coordinator::new(MemoryBackend::new());
    let a = coordinator.shards("pins", "a", COUNT, options())?;
    settled(&coordinator, &[&a]).await;
    // A shard b will win when it joins.
    let held: BTreeMap<u32, &str> = (0..COUNT).map(|shard| (shard, "a")).collect();
    let shard = *assign(&["a", "b"], &held, COUNT)
        .iter()
        .find(|(_, member)| **member == "b")
        .expect("b wins some shard")
        .0;
    let pin = a.pin(shard).await?;
    let token = pin.token();
    let b = {
        let work = a.while_owned(shard, |_| std::future::pending::<()>());
        tokio::pin!(work);
        // The work is under way before b joins.
        assert!(futures::poll!(&mut work).is_pending());
        let b = coordinator.shards("pins", "b", COUNT, options())?;
        // The release starts: the pin's work is told to stop, and while_owned's is
        // dropped.
        timeout(DEADLINE, pin.ended())
            .await
            .expect("the pin is told to stop");
        let stopped = timeout(DEADLINE, &mut work).await.expect("stopped");
        assert!(matches!(stopped, Ok(ShardWork::Ended)), "{stopped:?}");
        b
    };
    // While the pin is held, b does not get the shard.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !b.owned().contains(shard),
        "released while its work was pinned"
    );
    drop(pin);
    let owners = settled(&coordinator, &[&a, &b]).await;
    assert!(owners[&shard].1 > token);
    assert!(matches!(
        a.while_owned(shard, |_| async {}).await,
        Err(Error::NotHeld)
    ));
    a.stop().await;
    b.stop().await;
    Ok(())
}
