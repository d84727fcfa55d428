//! Paged reads of the bucket: a batched direct get by stream sequence (`seq` with
//! `next_by_subj` and a bounded `batch`), for reads whose size would grow with the
//! bucket.
//!
//! A batched direct get of the last message of every key under a filter
//! (`multi_last`, see [`Store::list`]) is one request: nats-server refuses it when
//! too many keys match (status 413). A page here is at most [`PAGE`] messages from a
//! given sequence on, in stream order. The bucket keeps one message per key (see
//! [`HISTORY`](crate::HISTORY)), so a walk of the pages from the first sequence on
//! reads every key's message; a key written during the walk moves to the stream's
//! end, where the walk finds it again, so a walk to the end sees every key that
//! existed when it started, each as it was at some moment of the walk, the latest
//! message read for a key standing for it.

use std::collections::HashMap;

use async_nats::StatusCode;
use distsync_core::{Error, Result};
use futures::StreamExt;

use crate::store::{Entry, Store, BETWEEN_ANSWERS, NUM_PENDING};
use crate::BACKEND;

/// The most messages one page returns.
pub(crate) const PAGE: usize = 256;

/// One page of messages: the entries in stream order and whether more match after
/// them.
pub(crate) struct Page {
    pub(crate) entries: Vec<Entry>,
    pub(crate) more: bool,
}

impl Page {
    /// The sequence a next page starts from.
    pub(crate) fn next(&self, from: u64) -> u64 {
        self.entries.last().map_or(from, |entry| entry.seq + 1)
    }
}

impl Store {
    /// At most `batch` messages (at most [`PAGE`]) of the keys matching `filter`,
    /// from the stream sequence `from` on, in stream order, tombstones included.
    ///
    /// # Errors
    /// The store's error.
    pub(crate) async fn page(&self, filter: &str, from: u64, batch: usize) -> Result<Page> {
        let mut drops = self.drops();
        let inbox = self.client.new_inbox();
        let mut answers = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|error| Error::connection(BACKEND, error))?;
        let request = serde_json::json!({
            "seq": from.max(1),
            "next_by_subj": self.subject(filter),
            "batch": batch.clamp(1, PAGE),
        });
        self.client
            .publish_with_reply(self.direct_get(), inbox, request.to_string().into())
            .await
            .map_err(|error| Error::connection(BACKEND, error))?;
        let mut entries = Vec::new();
        let mut wait = self.request_timeout;
        loop {
            let Some(answer) = Self::within(wait, &mut drops, answers.next()).await? else {
                return Err(Error::connection(BACKEND, "a page's subscription ended"));
            };
            wait = BETWEEN_ANSWERS.min(self.request_timeout);
            match answer.status {
                Some(StatusCode::NOT_FOUND) => {
                    return Ok(Page {
                        entries,
                        more: false,
                    })
                }
                Some(StatusCode::NO_RESPONDERS) => {
                    return Err(Error::connection(BACKEND, "jetstream did not answer"));
                }
                Some(status) if status.is_success() && answer.payload.is_empty() => {
                    let pending = (answer.headers.as_ref())
                        .and_then(|headers| headers.get(NUM_PENDING))
                        .and_then(|value| value.as_str().parse::<u64>().ok())
                        .unwrap_or(0);
                    return Ok(Page {
                        entries,
                        more: pending > 0,
                    });
                }
                Some(status) if !status.is_success() => {
                    return Err(Error::backend(
                        BACKEND,
                        format!("a page of {filter} answered status {status}"),
                    ));
                }
                _ => entries.push(self.entry(answer)?),
            }
        }
    }

    /// [`Store::list`] in pages: the latest message read of every key matching
    /// `filters`, in stream order, and the stream's last sequence before the walk
    /// (every write after it has a greater sequence).
    ///
    /// # Errors
    /// The store's error.
    pub(crate) async fn scan(&self, filters: &[String]) -> Result<(Vec<Entry>, u64)> {
        let last = self.last_sequence().await?;
        let mut latest: HashMap<String, Entry> = HashMap::new();
        for filter in filters {
            let mut from = 1;
            loop {
                let page = self.page(filter, from, PAGE).await?;
                from = page.next(from);
                let more = page.more;
                for entry in page.entries {
                    match latest.get(&entry.key) {
                        Some(known) if known.seq >= entry.seq => {}
                        _ => {
                            latest.insert(entry.key.clone(), entry);
                        }
                    }
                }
                if !more {
                    break;
                }
            }
        }
        let mut entries: Vec<Entry> = latest.into_values().collect();
        entries.sort_by_key(|entry| entry.seq);
        Ok((entries, last))
    }
}
