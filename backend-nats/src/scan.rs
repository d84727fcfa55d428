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

use distsync_core::{Error, Result};

use crate::store::{BatchEnd, Entry, Store};
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
        let request = serde_json::json!({
            "seq": from.max(1),
            "next_by_subj": self.subject(filter),
            "batch": batch.clamp(1, PAGE),
        });
        let (entries, end) = self.batched_get(&request).await?;
        let more = match end {
            BatchEnd::NotFound => false,
            BatchEnd::Done { pending, .. } => pending > 0,
            BatchEnd::TooMany => {
                let error = format!("a page of {filter} answered too many results");
                return Err(Error::backend(BACKEND, error));
            }
        };
        Ok(Page { entries, more })
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
                    if latest
                        .get(&entry.key)
                        .is_none_or(|known| known.seq < entry.seq)
                    {
                        latest.insert(entry.key.clone(), entry);
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
