//! What of `linearizable` a test can measure cheaply: no stale read across clients.
//! Two independent clients of one store (their own connections) take turns: one
//! commits a new value of a key, and as soon as the commit is acknowledged the other
//! reads the key, which must give that value, never an older one. A store that serves
//! reads from a lagging replica or cache fails this; a linearizable one cannot. (It
//! does not prove linearizability: concurrent histories are not checked.)

use distsync_core::{Bytes, Isolation, Stm};

use crate::check::{ensure, within, Check, Context, Holds, PROMPT};
use crate::harness::Harness;

/// Write-then-read rounds, alternating the writer.
const ROUNDS: usize = 50;

/// The case body (see the module docs).
pub(super) async fn no_stale_read(h: Harness) -> Check {
    let other = within(
        PROMPT,
        "connecting a second client",
        h.faults().second_client(&**h.backend()),
    )
    .await?;
    let clients: [Stm; 2] = [
        h.backend().stm().ctx("getting the first client's STM")?,
        other.stm().ctx("getting the second client's STM")?,
    ];
    let key = h.key("register");
    for round in 0..ROUNDS {
        let (writer, reader) = (round % 2, (round + 1) % 2);
        let value = round.to_string();
        let (put_key, put_value) = (key.clone(), value.clone());
        within(
            PROMPT,
            format!("client {writer} writing {value}"),
            clients[writer].atomically(Isolation::SerializableSnapshot, move |tx| {
                let (key, value) = (put_key.clone(), put_value.clone());
                async move {
                    tx.put(&key, value);
                    Ok(())
                }
            }),
        )
        .await?;
        let get_key = key.clone();
        let read: Option<Bytes> = within(
            PROMPT,
            format!("client {reader} reading"),
            clients[reader].atomically(Isolation::SerializableSnapshot, move |tx| {
                let key = get_key.clone();
                async move { tx.get(&key).await }
            }),
        )
        .await?;
        ensure!(
            read.as_deref() == Some(value.as_bytes()),
            "stale read: client {reader} read {read:?} right after client {writer}'s write of \
             {value:?} was acknowledged"
        );
    }
    Ok(Holds::figure(
        format!("{ROUNDS} cross-client reads, none stale"),
        "each acknowledged write was seen by the other client's next read",
    ))
}
