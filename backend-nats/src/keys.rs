//! Names as keys: every key is `<kind>.<name>[.<role>.<session>.<n>]`, a NATS subject
//! under the bucket's `$KV.<bucket>.` prefix.
//!
//! A subject token cannot hold `.`, `*`, `>` or white space, and JetStream's key
//! rules allow only letters, digits and `-/_=`; a distsync name may hold any
//! character. A name is therefore one token: every byte outside `[A-Za-z0-9_/-]` is
//! written `=XX` (two upper-case hex digits), `=` itself included, so that two names
//! never share a token (the escaping is injective) and a token reads back as its
//! name ([`unescape`]).

use distsync_core::Name;

/// The kinds of key, each the first token of its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A fair lock's contenders, `lock.<name>.q.<session>.<n>`, and an unfair lock's
    /// holder, `lock.<name>.q.holder`.
    Lock,
    /// An election's candidates: `election.<name>.q.<session>.<n>`.
    Election,
    /// A semaphore's acquirers: `semaphore.<name>.q.<session>.<n>`.
    Semaphore,
    /// A read-write lock's readers and writers: `rwlock.<name>.q.<session>.<n>`.
    RwLock,
    /// A barrier: `barrier.<name>`.
    Barrier,
    /// A double barrier's participants, `dbarrier.<name>.q.<session>.<n>`, and its
    /// `dbarrier.<name>.ready`.
    DoubleBarrier,
    /// An unfair lock's wait line: `unfair.<name>.q.<session>.<n>`.
    UnfairWait,
    /// A counter's value: `counter.<name>`.
    Counter,
    /// A latch's initial and remaining count: `latch.<name>`.
    Latch,
    /// A key written by a guarded write (`LockGuard::put_if_held`): `stm.<name>`.
    Stm,
    /// A queue's items, holds and records: `queue.<name>.<role>...` (see
    /// `src/queue.rs`).
    Queue,
    /// A rate limiter's state: `ratelimit.<name>` (see `src/rate_limiter.rs`).
    RateLimit,
}

impl Kind {
    /// Every kind, for listings of a name's keys (which read in pages when the keys
    /// are more than one batched direct get returns, see `src/scan.rs`).
    pub(crate) const ALL: [Kind; 12] = [
        Kind::Lock,
        Kind::Election,
        Kind::Semaphore,
        Kind::RwLock,
        Kind::Barrier,
        Kind::DoubleBarrier,
        Kind::UnfairWait,
        Kind::Counter,
        Kind::Latch,
        Kind::Stm,
        Kind::Queue,
        Kind::RateLimit,
    ];

    /// The subject filters of every kind's keys: what a listing of every name reads
    /// (status, purges, exports).
    pub(crate) fn every_key() -> Vec<String> {
        Kind::ALL
            .iter()
            .map(|kind| format!("{}.>", kind.token()))
            .collect()
    }

    /// The kind whose keys `key` is one of.
    pub(crate) fn of(key: &str) -> Option<Kind> {
        let token = key.split('.').next()?;
        Kind::ALL.iter().copied().find(|kind| kind.token() == token)
    }

    /// The first token of the kind's keys.
    pub(crate) fn token(self) -> &'static str {
        match self {
            Kind::Lock => "lock",
            Kind::UnfairWait => "unfair",
            Kind::Election => "election",
            Kind::Semaphore => "semaphore",
            Kind::RwLock => "rwlock",
            Kind::Barrier => "barrier",
            Kind::DoubleBarrier => "dbarrier",
            Kind::Counter => "counter",
            Kind::Latch => "latch",
            Kind::Stm => "stm",
            Kind::Queue => "queue",
            Kind::RateLimit => "ratelimit",
        }
    }
}

/// Whether `byte` stands for itself in a token.
fn plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'/')
}

/// `name` as one subject token.
pub(crate) fn escape(name: &str) -> String {
    let mut token = String::with_capacity(name.len());
    for &byte in name.as_bytes() {
        if plain(byte) {
            token.push(char::from(byte));
        } else {
            token.push_str(&format!("={byte:02X}"));
        }
    }
    token
}

/// The name a token of [`escape`] stands for; `None` for a token no name gives.
pub(crate) fn unescape(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        if byte == b'=' {
            let hex = token.get(at + 1..at + 3)?;
            let value = u8::from_str_radix(hex, 16).ok()?;
            if plain(value) || hex.bytes().any(|digit| digit.is_ascii_lowercase()) {
                // Not what `escape` writes: a second spelling of a name.
                return None;
            }
            out.push(value);
            at += 3;
        } else if plain(byte) {
            out.push(byte);
            at += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// The key of the one-key primitive `name` of `kind` (a counter, a latch, an STM key,
/// a rate limiter).
pub(crate) fn key(kind: Kind, name: &Name) -> String {
    format!("{}.{}", kind.token(), escape(name.as_str()))
}

/// The prefix of the keys of a line of contenders for `name` (`lock.<name>.q`).
pub(crate) fn line(kind: Kind, name: &Name) -> String {
    format!("{}.{}.q", kind.token(), escape(name.as_str()))
}

/// The filter of every key of the line `line`: its contenders, and an unfair lock's
/// holder in the fair lock's line.
pub(crate) fn every_in(line: &str) -> String {
    format!("{line}.>")
}

/// A contender's key in the line `line`: the session's id and the contender's
/// number in that session, each its own token, so that every key of a session is
/// found by one subject filter ([`of_session`]).
pub(crate) fn contender(line: &str, session: u64, n: u64) -> String {
    format!("{line}.{session:016x}.{n}")
}

/// The filter of every contender key of `session`, whatever the primitive.
pub(crate) fn of_session(session: u64) -> String {
    format!("*.*.q.{session:016x}.*")
}

/// The filter of every unfair lock's holder key.
pub(crate) const UNFAIR_HOLDERS: &str = "lock.*.q.holder";

/// The key of the unfair lock `name`'s holder: in the fair lock's line, where every
/// fair contender takes it for the head (see `src/unfair_lock.rs`).
pub(crate) fn unfair_holder(name: &Name) -> String {
    format!("{}.holder", line(Kind::Lock, name))
}

/// Whether `key` is an unfair lock's holder key.
pub(crate) fn is_unfair_holder(key: &str) -> bool {
    key.starts_with("lock.") && key.ends_with(".q.holder")
}

/// The value of a key taken by a contender of `session` (its `n`th): what tells
/// whose a shared key (an unfair lock's holder) is.
pub(crate) fn owner_value(session: u64, n: u64) -> String {
    format!("{session:016x}.{n}")
}

/// The name a key belongs to (its second token, unescaped), if it is one of ours.
pub(crate) fn name_of(key: &str) -> Option<String> {
    Kind::of(key)?;
    unescape(key.split('.').nth(1)?)
}

/// Whether `key` is a contender's key in a line (`<kind>.<name>.q.<...>`, an unfair
/// lock's holder among them): a key held through a session.
pub(crate) fn is_contender(key: &str) -> bool {
    key.split('.').nth(2) == Some("q")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_is_injective_and_reads_back() {
        let names = [
            "a",
            "a.b",
            "a=2Eb",
            "a b",
            "a*",
            "a>",
            "jobs/nightly",
            "é",
            "=",
            "==",
            "a_b",
            "a-b",
            "A",
            "a.",
            ".a",
            "a=",
        ];
        let tokens: std::collections::BTreeSet<String> =
            names.iter().map(|name| escape(name)).collect();
        assert_eq!(tokens.len(), names.len());
        for name in names {
            let token = escape(name);
            assert!(
                !token.contains(['.', '*', '>', ' ']),
                "{name:?} -> {token:?}"
            );
            assert_eq!(unescape(&token).as_deref(), Some(name));
        }
        assert_eq!(unescape("a=2e"), None);
        assert_eq!(unescape("=61"), None);
        assert_eq!(unescape("a.b"), None);
    }

    #[test]
    fn contender_keys_name_their_session_and_name() {
        let name = Name::new("jobs/a.b").unwrap();
        let key = contender(&line(Kind::Lock, &name), 0xabc, 7);
        assert_eq!(key, "lock.jobs/a=2Eb.q.0000000000000abc.7");
        assert_eq!(name_of(&key).as_deref(), Some("jobs/a.b"));
        assert_eq!(name_of("other.x"), None);
    }
}
