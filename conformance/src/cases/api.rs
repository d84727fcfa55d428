//! Cases across every primitive: typed errors for invalid names and arguments, and
//! capabilities that match what the factories do.

mod cut_off;
mod names;
mod oversized;
mod timed;

use std::num::NonZeroUsize;
use std::time::Duration;

use distsync_core::{Bytes, Error, Isolation, Result, SessionOptions, Stm};

use super::boxed;
use crate::case::{Case, Claim, Group, Need};
use crate::check::{violated, within, Bounded, Check, Context, Holds, PROMPT};
use crate::faults::Hook;
use crate::harness::Harness;

/// The API cases, in matrix order.
pub(super) const CASES: &[Case] = &[
    Case {
        id: "api_invalid_names_and_arguments",
        group: Group::Api,
        guarantee: "invalid names and arguments are typed errors",
        needs: &[],
        claim: Claim::Contract,
        hooks: &[],
        run: |h| boxed(invalid_names_and_arguments(h)),
    },
    Case {
        id: "api_names_do_not_collide",
        group: Group::Api,
        guarantee: "distinct (kind, name) pairs never share a key: nested, alike and random names",
        needs: &[],
        claim: Claim::Contract,
        hooks: &[],
        run: |h| boxed(names::do_not_collide(h)),
    },
    Case {
        id: "api_timed_acquisition",
        group: Group::Api,
        guarantee: "every blocking call under timeout() gives Timeout and leaves nothing behind",
        needs: &[],
        claim: Claim::Contract,
        hooks: &[],
        run: |h| boxed(timed::every_blocking_call(h)),
    },
    Case {
        id: "api_requests_bounded_under_partition",
        group: Group::Api,
        guarantee:
            "a request into a silent partition fails within the URL's timeout; the client recovers",
        needs: &[Need::Lock, Need::Queue],
        claim: Claim::Contract,
        hooks: &[Hook::Partition],
        run: |h| boxed(cut_off::requests_into_a_silent_partition(h)),
    },
    Case {
        id: "api_oversized_value_refused",
        group: Group::Api,
        guarantee: "a value one byte over the declared limit is TooLarge at once and nothing is \
                    written; a value at the limit is taken",
        needs: &[],
        claim: Claim::Contract,
        hooks: &[],
        run: |h| boxed(oversized::refused_and_nothing_written(h)),
    },
    Case {
        id: "api_capabilities_match",
        group: Group::Api,
        guarantee: "undeclared primitives and levels say Unsupported",
        needs: &[],
        claim: Claim::Contract,
        hooks: &[],
        run: |h| boxed(capabilities_match(h)),
    },
];

/// The invalid names every primitive must refuse (empty, leading `/`, empty segment,
/// trailing `/`, NUL, 256 bytes).
fn bad_names() -> Vec<String> {
    vec![
        String::new(),
        "/a".to_owned(),
        "a//b".to_owned(),
        "a/".to_owned(),
        "a\0b".to_owned(),
        "x".repeat(256),
    ]
}

/// Invalid names and arguments give typed errors, never a panic: every bad name
/// through the [`distsync_core::Coordinator`] of every primitive is
/// `Error::InvalidName` naming it, as is a bad STM key in `get` and in `put`; a
/// double-barrier count or semaphore permit number of 0 (through the Coordinator,
/// which refuses it whatever the backend offers) and a session TTL below the backend's
/// minimum are `Error::InvalidArgument`.
async fn invalid_names_and_arguments(h: Harness) -> Check {
    let caps = h.capabilities().clone();
    let coordinator = h.coordinator();
    let session = h.session().bounded("opening a session").await?;
    let mut checks = 0usize;
    for bad in bad_names() {
        let shown = shown(&bad);
        invalid_name(&bad, "locker", coordinator.locker(&session, &bad).map(drop))?;
        invalid_name(
            &bad,
            "election",
            coordinator.election(&session, &bad).map(drop),
        )?;
        invalid_name(&bad, "rwlock", coordinator.rwlock(&session, &bad).map(drop))?;
        invalid_name(&bad, "queue", coordinator.queue(&bad).map(drop))?;
        invalid_name(&bad, "barrier", coordinator.barrier(&bad).map(drop))?;
        invalid_name(
            &bad,
            "double barrier",
            coordinator.double_barrier(&session, &bad, 2).map(drop),
        )?;
        checks += 6;
        if let Some(level) = Isolation::ALL
            .into_iter()
            .find(|&level| caps.supports_isolation(level))
        {
            let stm = coordinator.stm().ctx("getting the STM")?;
            invalid_stm_key(&stm, level, &bad, &shown).await?;
            checks += 2;
        }
    }

    // The raw API takes counts as `NonZeroUsize`; a zero is refused at the
    // Coordinator, before the backend is asked, whatever it offers.
    let name = h.name("zero").ctx("naming the zero-count primitives")?;
    let zeros = [
        (
            "double barrier",
            coordinator
                .double_barrier(&session, name.as_str(), 0)
                .map(drop),
        ),
        (
            "semaphore",
            coordinator.semaphore(&session, name.as_str(), 0).map(drop),
        ),
    ];
    for (what, result) in zeros {
        match result {
            Err(Error::InvalidArgument(_)) => checks += 1,
            Err(other) => {
                return violated(format!(
                    "a {what} with count 0 gave {other}, not InvalidArgument"
                ))
            }
            Ok(()) => return violated(format!("a {what} with count 0 was made")),
        }
    }

    checks += ttls_below_the_minimum(&h, caps.min_session_ttl).await?;
    within(PROMPT, "closing the session", session.close()).await?;
    Ok(Holds::figure(
        format!("{checks} typed errors"),
        "InvalidName for 6 bad names on every primitive and STM key; InvalidArgument for count \
         0, permits 0 and a TTL below the minimum",
    ))
}

/// A bad STM key is `Error::InvalidName` naming it, in `get` and in `put`, at `level`.
async fn invalid_stm_key(stm: &Stm, level: Isolation, bad: &str, shown: &str) -> Check<()> {
    let key = bad.to_owned();
    let got = tokio::time::timeout(
        PROMPT,
        stm.atomically(level, move |tx| {
            let key = key.clone();
            async move { tx.get(&key).await.map(drop) }
        }),
    )
    .await;
    match got {
        Ok(result) => invalid_name(bad, "STM get", result)?,
        Err(_) => {
            return violated(format!(
                "STM get of {shown} did not return within {PROMPT:?}"
            ))
        }
    }
    let key = bad.to_owned();
    let put = tokio::time::timeout(
        PROMPT,
        stm.atomically(level, move |tx| {
            tx.put(&key, Bytes::from_static(b"v"));
            async move { Ok(()) }
        }),
    )
    .await;
    match put {
        Ok(result) => invalid_name(bad, "STM put", result)?,
        Err(_) => {
            return violated(format!(
                "STM put of {shown} did not return within {PROMPT:?}"
            ))
        }
    }
    Ok(())
}

/// A session TTL below the backend's minimum `min` is `Error::InvalidArgument`;
/// returns how many were checked.
async fn ttls_below_the_minimum(h: &Harness, min: Duration) -> Check<usize> {
    let mut checks = 0;
    let mut below = vec![Duration::ZERO];
    if min > Duration::from_millis(1) {
        below.push(min / 2);
        below.push(min - Duration::from_millis(1));
    }
    for ttl in below.into_iter().filter(|ttl| *ttl < min) {
        match within(
            PROMPT,
            format!("opening a session with TTL {ttl:?}"),
            async { Ok(h.backend().session(SessionOptions::with_ttl(ttl)).await) },
        )
        .await?
        {
            Err(Error::InvalidArgument(_)) => checks += 1,
            Err(other) => {
                return violated(format!(
                    "a session TTL of {ttl:?} (minimum {min:?}) gave {other}, not InvalidArgument"
                ))
            }
            Ok(opened) => {
                let _ = opened.close().await;
                return violated(format!(
                    "a session with TTL {ttl:?} was opened; the minimum is {min:?}"
                ));
            }
        }
    }
    Ok(checks)
}

fn shown(name: &str) -> String {
    if name.len() > 20 {
        format!("{:?}... ({} bytes)", &name[..10], name.len())
    } else {
        format!("{name:?}")
    }
}

fn invalid_name(bad: &str, what: &str, result: Result<()>) -> Check<()> {
    match result {
        Err(Error::InvalidName { name, .. }) if name == bad => Ok(()),
        Err(Error::InvalidName { name, .. }) => violated(format!(
            "{what} with name {} reported InvalidName for another name, {}",
            shown(bad),
            shown(&name)
        )),
        Err(other) => violated(format!(
            "{what} with name {} gave {other}, not InvalidName",
            shown(bad)
        )),
        Ok(()) => violated(format!("{what} accepted the invalid name {}", shown(bad))),
    }
}

/// Capabilities match the factories: a primitive declared `false` is refused with
/// `Error::Unsupported` (so is `enqueue_with_priority` when `priority_queue` is false,
/// and an STM level declared `false`), and a primitive declared `true` is made.
async fn capabilities_match(h: Harness) -> Check {
    let caps = h.capabilities().clone();
    let backend = h.backend().clone();
    let session = h.session().bounded("opening a session").await?;
    let name = h.name("probe").ctx("naming the probe")?;
    let mut refused = Vec::new();
    let mut made = Vec::new();
    let probes: [(&str, bool, Result<()>); 6] = [
        (
            "lock",
            caps.lock,
            backend.locker(&session, name.clone()).map(drop),
        ),
        (
            "election",
            caps.election,
            backend.election(&session, name.clone()).map(drop),
        ),
        (
            "rwlock",
            caps.rwlock,
            backend.rwlock(&session, name.clone()).map(drop),
        ),
        ("queue", caps.queue, backend.queue(name.clone()).map(drop)),
        (
            "barrier",
            caps.barrier,
            backend.barrier(name.clone()).map(drop),
        ),
        (
            "double_barrier",
            caps.double_barrier,
            backend
                .double_barrier(&session, name.clone(), NonZeroUsize::MIN)
                .map(drop),
        ),
    ];
    for (flag, declared, result) in probes {
        agree(flag, declared, result, &mut refused, &mut made)?;
    }
    if caps.queue {
        let queue = backend.queue(name.clone()).ctx("making a queue")?;
        let result = within(PROMPT, "enqueue_with_priority", async {
            Ok(queue
                .enqueue_with_priority(Bytes::from_static(b"probe"), 1)
                .await)
        })
        .await?;
        agree(
            "priority_queue",
            caps.priority_queue,
            result,
            &mut refused,
            &mut made,
        )?;
    }
    match backend.stm() {
        Err(Error::Unsupported { .. }) if !caps.stm() => refused.push("stm"),
        Err(other) => {
            return violated(format!(
                "stm() gave {other} while capabilities declare some STM level"
            ))
        }
        Ok(_) if !caps.stm() => {
            return violated("stm() was made although capabilities declare no STM level")
        }
        Ok(stm) => {
            for level in Isolation::ALL {
                let flag = crate::case::Need::Stm(level).flag();
                let result = within(
                    PROMPT,
                    format!("running an empty STM transaction at {level}"),
                    async { Ok(stm.atomically(level, |_tx| async { Ok(()) }).await) },
                )
                .await?;
                agree(
                    flag,
                    caps.supports_isolation(level),
                    result,
                    &mut refused,
                    &mut made,
                )?;
            }
        }
    }
    within(PROMPT, "closing the session", session.close()).await?;
    Ok(Holds::new(format!(
        "made: {}; refused with Unsupported: {}",
        list(&made),
        list(&refused)
    )))
}

fn agree(
    flag: &'static str,
    declared: bool,
    result: Result<()>,
    refused: &mut Vec<&'static str>,
    made: &mut Vec<&'static str>,
) -> Check<()> {
    match (declared, result) {
        (true, Ok(())) => made.push(flag),
        (false, Err(Error::Unsupported { .. })) => refused.push(flag),
        (true, Err(error)) => {
            return violated(format!(
                "capabilities declare {flag} = true but the backend gave {error}"
            ))
        }
        (false, Ok(())) => {
            return violated(format!(
                "capabilities declare {flag} = false but the backend did it without Unsupported"
            ))
        }
        (false, Err(error)) => {
            return violated(format!(
                "capabilities declare {flag} = false; expected Unsupported, got {error}"
            ))
        }
    }
    Ok(())
}

fn list(flags: &[&str]) -> String {
    if flags.is_empty() {
        "none".to_owned()
    } else {
        flags.join(", ")
    }
}
