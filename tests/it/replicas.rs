//! Group membership and shard ownership on the memory store: the assignment every
//! member computes, the moves a join makes, the hand-over of a stopped member's shards,
//! and that a shard is never released while work on it is pinned.

use std::collections::BTreeMap;
use std::time::Duration;

use distsync::replicas::{assign, ShardOptions, ShardWork, Shards};
use distsync::store::memory::MemoryBackend;
use distsync::{Coordinator, Error, FencingToken};
use tokio::time::timeout;

/// How long any expected change may take (the memory store answers at once; the loops
/// read the member list every 50 ms).
const DEADLINE: Duration = Duration::from_secs(10);

fn options() -> ShardOptions {
    ShardOptions::default().with_poll(Duration::from_millis(50))
}

/// Waits, with the deadline, until `members` own every shard once, as [`assign`] gives
/// it for their current holds (a stable, balanced assignment); returns the owners.
async fn settled(members: &[&Shards]) -> BTreeMap<u32, (String, FencingToken)> {
    let count = members[0].count();
    let ids: Vec<&str> = members.iter().map(|m| m.member()).collect();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut owners = BTreeMap::new();
        let mut twice = false;
        for member in members {
            for (shard, token) in member.owned().iter() {
                twice |= owners
                    .insert(shard, (member.member().to_owned(), token))
                    .is_some();
            }
        }
        assert!(!twice, "a shard owned twice: {owners:?}");
        let held: BTreeMap<u32, &str> = owners.iter().map(|(s, (m, _))| (*s, m.as_str())).collect();
        if owners.len() == count as usize && assign(&ids, &held, count) == held {
            return owners;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never settled: {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    let owners = settled(&[&a, &b, &c]).await;
    assert_eq!(owners.len(), COUNT as usize, "every shard owned once");
    let before: u64 = [&a, &b, &c].iter().map(|m| m.counts().acquired).sum();

    let d = coordinator.shards("index", "d", COUNT, options())?;
    settled(&[&a, &b, &c, &d]).await;
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
    let after_leave = settled(&[&a, &b, &c]).await;
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
    settled(&[&a]).await;
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
    let owners = settled(&[&a, &b]).await;
    assert!(owners[&shard].1 > token);
    assert!(matches!(
        a.while_owned(shard, |_| async {}).await,
        Err(Error::NotHeld)
    ));
    a.stop().await;
    b.stop().await;
    Ok(())
}
