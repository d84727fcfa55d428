//! Names as keys: every key is `<kind>.<name>[.<role>.<session>.<n>]`, a NATS subject
//! under the bucket's `$KV.<bucket>.` prefix, where `<name>` stands for the name's
//! tokens: each `/`-separated segment of the name as one token, then the token `=`
//! that ends them ([`name_tokens`]).
//!
//! A subject token cannot hold `.`, `*`, `>` or white space, and JetStream's key
//! rules allow only letters, digits and `-/_=`; a distsync name may hold any
//! character. So every byte of a segment outside `[A-Za-z0-9_-]` is written `=XX`
//! (two upper-case hex digits), `=` itself included, so that two segments never share
//! a token (the escaping is injective), a token reads back as its segment
//! ([`unescape`]), and no segment's token is `=` alone, which therefore ends a name
//! wherever it stands.
//!
//! Why a segment per token: a subject filter matches whole tokens, so the keys of the
//! names under a prefix are one filter per kind (`lock.jobs.nightly.>` for `jobs/nightly/`,
//! [`every_key_under`]), and a status report, a purge or a group's member list reads the
//! names it covers rather than the whole bucket. Why the closing token: `<kind>.<name>.>`
//! then matches the keys of that name alone, never those of a name under it. The price
//! is that a session's keys, whose session token stands after names of any depth, have
//! no filter of their own: ending another process's session lists every kind's keys
//! ([`is_contender_of`]), which only breaks and revocations do.

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

/// `text` (a name's segment, a queue's idempotency key) as one subject token.
pub(crate) fn escape(text: &str) -> String {
    let mut token = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if plain(byte) {
            token.push(char::from(byte));
        } else {
            token.push_str(&format!("={byte:02X}"));
        }
    }
    token
}

/// The text a token of [`escape`] stands for; `None` for a token `escape` never writes.
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

/// The token that ends a name's tokens: `=` alone, which [`escape`] never writes.
const NAME_END: &str = "=";

/// `name`'s tokens in a key (`<name>` of the layouts): each `/`-separated segment
/// escaped as one token, then [`NAME_END`].
pub(crate) fn name_tokens(name: &str) -> String {
    let mut tokens: Vec<String> = name.split('/').map(escape).collect();
    tokens.push(NAME_END.to_owned());
    tokens.join(".")
}

/// The subject filters of the keys of every name under `prefix` (a status report's or
/// a purge's prefix), one per kind: the prefix's whole segments as tokens, then `>`.
/// A prefix's last, partial segment cannot be a filter's (a filter matches whole
/// tokens), so the filters may match more names than the prefix covers, never fewer:
/// a caller keeps the names it covers.
pub(crate) fn every_key_under(prefix: &str) -> Vec<String> {
    let whole: Vec<String> = prefix
        .rsplit_once('/')
        .map(|(segments, _partial)| {
            segments
                .split('/')
                .take_while(|segment| !segment.is_empty())
                .map(escape)
                .collect()
        })
        .unwrap_or_default();
    Kind::ALL
        .iter()
        .map(|kind| {
            let mut tokens = vec![kind.token().to_owned()];
            tokens.extend(whole.iter().cloned());
            tokens.push(">".to_owned());
            tokens.join(".")
        })
        .collect()
}

/// A key read at its name: the kind's token, the name's tokens and the tokens after
/// them.
pub(crate) struct Parts<'k> {
    /// The first token.
    pub(crate) kind: &'k str,
    /// The name's tokens as the key writes them, [`NAME_END`] included: `<name>`.
    pub(crate) name: &'k str,
    /// The tokens after the name: a role, a session, a number, ...
    pub(crate) rest: Vec<&'k str>,
}

/// `key` read at its name; `None` for a key with no name (a session's, the clock) or
/// one another writer put in the bucket.
pub(crate) fn parts(key: &str) -> Option<Parts<'_>> {
    let (kind, after) = key.split_once('.')?;
    let mut at = 0;
    let end = after.split('.').find_map(|token| {
        at += token.len() + 1;
        (token == NAME_END).then_some(at - 1)
    })?;
    let rest = (after.get(end + 1..)).map_or_else(Vec::new, |rest| rest.split('.').collect());
    Some(Parts {
        kind,
        name: &after[..end],
        rest,
    })
}

/// The key of the one-key primitive `name` of `kind` (a counter, a latch, an STM key,
/// a rate limiter).
pub(crate) fn key(kind: Kind, name: &Name) -> String {
    format!("{}.{}", kind.token(), name_tokens(name.as_str()))
}

/// The prefix of the keys of a line of contenders for `name` (`lock.<name>.q`).
pub(crate) fn line(kind: Kind, name: &Name) -> String {
    format!("{}.{}.q", kind.token(), name_tokens(name.as_str()))
}

/// The filter of every key of the line `line`: its contenders, and an unfair lock's
/// holder in the fair lock's line.
pub(crate) fn every_in(line: &str) -> String {
    format!("{line}.>")
}

/// A contender's key in the line `line`: the session's id and the contender's
/// number in that session, each its own token, so that a key tells its session
/// ([`session_of`]).
pub(crate) fn contender(line: &str, session: u64, n: u64) -> String {
    format!("{line}.{session:016x}.{n}")
}

/// Whether `key` is a contender key of `session` (`<kind>.<name>.q.<session>.<n>`),
/// whatever the primitive.
pub(crate) fn is_contender_of(key: &str, session: u64) -> bool {
    session_of(key) == Some(session)
}

/// The key of the unfair lock `name`'s holder: in the fair lock's line, where every
/// fair contender takes it for the head (see `src/unfair_lock.rs`).
pub(crate) fn unfair_holder(name: &Name) -> String {
    format!("{}.holder", line(Kind::Lock, name))
}

/// The session of the contender key `key` (`<kind>.<name>.q.<session>.<n>`).
pub(crate) fn session_of(key: &str) -> Option<u64> {
    match parts(key)?.rest.as_slice() {
        ["q", session, _] => u64::from_str_radix(session, 16).ok(),
        _ => None,
    }
}

/// Whether `key` is an unfair lock's holder key.
pub(crate) fn is_unfair_holder(key: &str) -> bool {
    parts(key).is_some_and(|parts| {
        parts.kind == Kind::Lock.token() && parts.rest.as_slice() == ["q", "holder"]
    })
}

/// The value of a key taken by a contender of `session` (its `n`th): what tells
/// whose a shared key (an unfair lock's holder) is.
pub(crate) fn owner_value(session: u64, n: u64) -> String {
    format!("{session:016x}.{n}")
}

/// The name a key belongs to (its name's tokens, unescaped), if it is one of ours.
pub(crate) fn name_of(key: &str) -> Option<String> {
    Kind::of(key)?;
    let parts = parts(key)?;
    let tokens = parts.name.strip_suffix(NAME_END)?.strip_suffix('.')?;
    let segments = tokens
        .split('.')
        .map(|token| {
            unescape(token).filter(|segment| !segment.is_empty() && !segment.contains('/'))
        })
        .collect::<Option<Vec<String>>>()?;
    Some(segments.join("/"))
}

/// Whether `key` is a contender's key in a line (`<kind>.<name>.q.<...>`, an unfair
/// lock's holder among them): a key held through a session.
pub(crate) fn is_contender(key: &str) -> bool {
    parts(key).is_some_and(|parts| parts.rest.first() == Some(&"q"))
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
        assert_eq!(key, "lock.jobs.a=2Eb.=.q.0000000000000abc.7");
        assert_eq!(name_of(&key).as_deref(), Some("jobs/a.b"));
        assert!(is_contender(&key));
        assert_eq!(session_of(&key), Some(0xabc));
        assert!(is_contender_of(&key, 0xabc));
        assert!(!is_contender_of(&key, 0xabd));
        assert_eq!(name_of("other.x"), None);
        assert_eq!(name_of("session.0000000000000abc"), None);
    }

    #[test]
    fn a_name_reads_back_whatever_its_segments_hold() {
        for name in [
            "a",
            "a/b/c",
            "q/q",
            "=/==",
            "a.b/ready",
            "p/holder/q",
            "é/x y",
        ] {
            let name = Name::new(name).unwrap();
            for key in [
                key(Kind::Counter, &name),
                format!("{}.holder", line(Kind::Lock, &name)),
                contender(&line(Kind::Election, &name), 1, 2),
            ] {
                assert_eq!(name_of(&key).as_deref(), Some(name.as_str()), "{key}");
            }
            let one_key = key(Kind::Counter, &name);
            assert!(parts(&one_key).unwrap().rest.is_empty(), "{one_key}");
            assert!(!is_contender(&one_key));
            assert!(is_unfair_holder(&format!(
                "{}.holder",
                line(Kind::Lock, &name)
            )));
        }
        // Not a name: no closing token, an empty segment, a segment `escape` never writes.
        assert_eq!(name_of("lock.a.q.0000000000000001.1"), None);
        assert_eq!(name_of("lock.=.q.0000000000000001.1"), None);
        assert_eq!(name_of("lock.a/b.=.q.0000000000000001.1"), None);
        assert_eq!(name_of("lock.=61.="), None);
    }

    /// A name's keys are never under another name's: `<kind>.<name>.>` matches the
    /// name's own keys alone.
    #[test]
    fn a_names_keys_are_not_under_a_shorter_names() {
        let pairs = [("a", "a/b"), ("a", "a/="), ("a/b", "a/b/q"), ("q", "q/q")];
        for (short, long) in pairs {
            let (short, long) = (Name::new(short).unwrap(), Name::new(long).unwrap());
            let under = format!("{}.", key(Kind::Lock, &short));
            for key in [
                key(Kind::Lock, &long),
                contender(&line(Kind::Lock, &long), 1, 1),
            ] {
                assert!(!key.starts_with(&under), "{key} is under {under}");
            }
        }
    }

    /// The filters of a prefix: its whole segments, then `>`; every name the prefix
    /// covers matches them.
    #[test]
    fn a_prefixs_filters_are_its_whole_segments() {
        let lock = |prefix: &str| every_key_under(prefix)[0].clone();
        assert_eq!(Kind::ALL[0], Kind::Lock);
        assert_eq!(lock(""), "lock.>");
        assert_eq!(lock("jobs"), "lock.>");
        assert_eq!(lock("jobs/"), "lock.jobs.>");
        assert_eq!(lock("jobs/night"), "lock.jobs.>");
        assert_eq!(lock("a.b/c d/"), "lock.a=2Eb.c=20d.>");
        assert_eq!(lock("a//b/"), "lock.a.>");
        assert_eq!(every_key_under("x/").len(), Kind::ALL.len());
        let matches = |filter: &str, key: &str| {
            let filter: Vec<&str> = filter.split('.').collect();
            let key: Vec<&str> = key.split('.').collect();
            let fixed = filter.len() - 1;
            key.len() > fixed && filter[..fixed] == key[..fixed]
        };
        for (prefix, name) in [
            ("jobs/", "jobs/nightly"),
            ("jobs/night", "jobs/nightly/x"),
            ("", "a"),
        ] {
            let key = contender(&line(Kind::Lock, &Name::new(name).unwrap()), 1, 1);
            assert!(
                matches(&lock(prefix), &key),
                "{prefix:?} does not match {key}"
            );
        }
        let other = contender(&line(Kind::Lock, &Name::new("jobsx/a").unwrap()), 1, 1);
        assert!(!matches(&lock("jobs/"), &other));
    }
}
