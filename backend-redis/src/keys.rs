//! The key layout: every key starts with a hash tag `{<namespace>...}`.
//!
//! | what | key |
//! |---|---|
//! | a primitive's keys | `{<ns><escaped name>}:<kind>:...` (kind: `lock`, `rw`, `elect`, `queue`, `barrier`, `dbar`, `sem`, `ratelimit`) |
//! | a session | `{<ns>session:<id>}`, its registry `{<ns>session:<id>}:held` |
//! | an STM key | `{<ns>stm}:k:<name>`, the STM revision `{<ns>stm}:rev` |
//! | the promotion record | `{<ns>promoted}`; under Redis Cluster `{<ns>promoted:<tag>}`, one per hash slot ([`crate::promotion_record`]) |
//!
//! The keys of one primitive share one hash tag, hence one Redis Cluster slot; all STM
//! keys share one too.
//!
//! ## Names are escaped: distinct (kind, name) pairs never share a key
//!
//! In a primitive's keys the name is escaped (`escape_name`): `%` becomes `%25`, `{`
//! becomes `%7B` and `}` becomes `%7D`; every other character (`/`, `:`, non-ASCII, ...)
//! is kept as it is. The escaped name holds no brace, so the `}` after it always closes
//! the hash tag, and what follows it (`:<kind>:...`) is read unambiguously:
//!
//! * two names of one kind differ inside the tag (escaping is injective: `%` itself
//!   is escaped, so an escaped text has one reading);
//! * two kinds of one name differ in the kind word right after the tag;
//! * an STM key `{<ns>stm}:k:<name>` could meet a primitive only under the tag
//!   `{<ns>stm}`, that is the primitive named `stm`, whose keys go on with a kind word,
//!   never `k`; a session key `{<ns>session:<id>}` could meet only the primitive named
//!   `session:<id>`, whose keys go on with `:<kind>`, never nothing or `:held`;
//!   likewise the promotion record could meet only the primitive named `promoted` or
//!   `promoted:<tag>`, whose keys go on with `:<kind>`, never nothing.
//!
//! Without the escape a name with `}` moved the tag's end and a lock named
//! `stm}:k:x` shared keys with the STM key `x}:lock:q` (`WRONGTYPE` errors). STM names
//! need no escape (they come last in their key and under one fixed tag). Names are
//! kept unescaped in what users see (errors, guards' `key()` shows the store key, so
//! the escaped form). The namespace is used as it is: give namespaces that are not
//! prefixes of one another (end them with a separator, as the default `distsync:`).

use std::borrow::Cow;

use distsync_core::Name;

/// The part of `key` Redis Cluster hashes to place it: its hash tag (what lies between
/// its first `{` and the first `}` after it, when not empty), else the whole key.
pub(crate) fn hash_tag(key: &[u8]) -> &[u8] {
    key.iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key)
}

/// A name as it appears inside a primitive's hash tag: `%` → `%25`, `{` → `%7B`,
/// `}` → `%7D`, every other character as it is. Injective, and the result holds no
/// brace; [`unescape_name`] reverses it.
pub(crate) fn escape_name(name: &str) -> Cow<'_, str> {
    if !name.contains(['%', '{', '}']) {
        return Cow::Borrowed(name);
    }
    let mut escaped = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '%' => escaped.push_str("%25"),
            '{' => escaped.push_str("%7B"),
            '}' => escaped.push_str("%7D"),
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// The name an [`escape_name`] output stands for; `None` for a text no name escapes
/// to (a brace, or a `%` not starting `%25`, `%7B` or `%7D`).
pub(crate) fn unescape_name(text: &str) -> Option<String> {
    let mut name = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(['%', '{', '}']) {
        name.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (c, skip) = match tail.get(..3) {
            Some("%25") => ('%', 3),
            Some("%7B") => ('{', 3),
            Some("%7D") => ('}', 3),
            _ => return None,
        };
        name.push(c);
        rest = &tail[skip..];
    }
    name.push_str(rest);
    Some(name)
}

/// Builds key and channel names for one namespace and database.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    ns: String,
    channel_prefix: String,
}

/// The kinds of primitive, each with its own keys under a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Lock,
    RwLock,
    Election,
    Queue,
    Barrier,
    DoubleBarrier,
    Semaphore,
    RateLimit,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Lock => "lock",
            Kind::RwLock => "rw",
            Kind::Election => "elect",
            Kind::Queue => "queue",
            Kind::Barrier => "barrier",
            Kind::DoubleBarrier => "dbar",
            Kind::Semaphore => "sem",
            Kind::RateLimit => "ratelimit",
        }
    }
}

impl Keys {
    pub(crate) fn new(ns: &str, db: i64) -> Self {
        Self {
            ns: ns.to_owned(),
            channel_prefix: format!("{db}|"),
        }
    }

    /// The prefix of every key of primitive `name` of `kind`:
    /// `{<ns><escaped name>}:<kind>` ([`escape_name`]).
    pub(crate) fn primitive(&self, name: &Name, kind: Kind) -> String {
        format!(
            "{{{}{}}}:{}",
            self.ns,
            escape_name(name.as_str()),
            kind.as_str()
        )
    }

    /// `{<ns>session:<id>}`.
    pub(crate) fn session(&self, id: u64) -> String {
        format!("{}{id}}}", self.session_prefix())
    }

    /// What [`Keys::session`] puts before the id: `{<ns>session:`.
    pub(crate) fn session_prefix(&self) -> String {
        format!("{{{}session:", self.ns)
    }

    /// `{<ns>session:<id>}:held`: entry key -> expected value of what the session holds.
    pub(crate) fn registry(&self, id: u64) -> String {
        format!("{}:held", self.session(id))
    }

    pub(crate) fn stm_key(&self, name: &Name) -> String {
        format!("{{{}stm}}:k:{name}", self.ns)
    }

    pub(crate) fn stm_revision(&self) -> String {
        format!("{{{}stm}}:rev", self.ns)
    }

    /// The channel prefix every script gets as `ARGV[1]`; channels are server-wide, so
    /// it carries the database number.
    pub(crate) fn channel_prefix(&self) -> &str {
        &self.channel_prefix
    }

    /// The full channel name of `suffix` (a key-like name built from a prefix).
    pub(crate) fn channel(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.channel_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let keys = Keys::new("app:", 2);
        let name = Name::new("jobs/nightly").unwrap();
        assert_eq!(keys.primitive(&name, Kind::Lock), "{app:jobs/nightly}:lock");
        assert_eq!(keys.session(26), "{app:session:26}");
        assert_eq!(keys.registry(26), "{app:session:26}:held");
        assert_eq!(keys.stm_key(&name), "{app:stm}:k:jobs/nightly");
        assert_eq!(keys.channel("x"), "2|x");
    }

    #[test]
    fn names_with_braces_are_escaped_inside_the_tag() {
        let keys = Keys::new("", 0);
        let a = keys.primitive(&Name::new("a}:lock").unwrap(), Kind::Lock);
        let b = keys.primitive(&Name::new("a").unwrap(), Kind::Lock);
        assert_eq!(a, "{a%7D:lock}:lock");
        assert_eq!(b, "{a}:lock");
        assert_eq!(
            keys.primitive(&Name::new("{x}%/é").unwrap(), Kind::Queue),
            "{%7Bx%7D%25/é}:queue"
        );
        // The collision of the issue: a lock `stm}:k:x` and the STM key `x}:lock:q`.
        let lock = keys.primitive(&Name::new("stm}:k:x").unwrap(), Kind::Lock);
        let stm = keys.stm_key(&Name::new("x}:lock:q").unwrap());
        assert_ne!(format!("{lock}:q"), stm);
    }

    #[test]
    fn escaping_round_trips_and_rejects_what_no_name_escapes_to() {
        for name in [
            "plain",
            "%",
            "%25",
            "{",
            "}",
            "a{b}c%7D",
            "é/😀:x",
            "%%{{}}",
        ] {
            let escaped = escape_name(name);
            assert!(!escaped.contains(['{', '}']), "{escaped}");
            assert_eq!(unescape_name(&escaped).as_deref(), Some(name));
        }
        for bad in ["a}", "{", "%", "%2", "%41", "a%7"] {
            assert_eq!(unescape_name(bad), None, "{bad}");
        }
    }

    /// A small deterministic generator (xorshift64*), so that a failure repeats.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap()
        }
    }

    /// Who a key belongs to.
    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    enum Owner {
        Primitive(&'static str, String),
        Stm(String),
        StmRevision,
        Session(u64),
    }

    /// Every key and channel `owner` may use, by the layouts of `lua/lib.lua` and the
    /// scripts (entry, call and session ids as samples). Channels are marked `ch|`.
    fn keys_of(keys: &Keys, owner: &Owner) -> Vec<String> {
        let ch = |suffix: String| format!("ch|{}", keys.channel(&suffix));
        match owner {
            Owner::Primitive(kind, name) => {
                let kind = match *kind {
                    "lock" => Kind::Lock,
                    "rw" => Kind::RwLock,
                    "elect" => Kind::Election,
                    "queue" => Kind::Queue,
                    "barrier" => Kind::Barrier,
                    "sem" => Kind::Semaphore,
                    _ => Kind::DoubleBarrier,
                };
                let p = keys.primitive(&Name::new(name.as_str()).unwrap(), kind);
                let suffixes: &[&str] = match kind {
                    // A lock's unfair side (`crate::unfair_lock`) beside its fair line.
                    Kind::Lock => &[
                        ":q", ":g", ":e:17.0", ":e:5.3", ":fence", ":seq", ":v", ":ver", ":cur",
                        ":epoch", ":u", ":uq", ":um:17.0", ":um:5.3",
                    ],
                    Kind::RwLock | Kind::Election => &[
                        ":q", ":g", ":e:17.0", ":e:5.3", ":fence", ":seq", ":v", ":ver", ":cur",
                        ":epoch",
                    ],
                    Kind::Semaphore => &[
                        ":q", ":g", ":e:17.0", ":e:5.3", ":fence", ":seq", ":n", ":epoch",
                    ],
                    Kind::Queue => &[":items", ":inflight", ":waiters", ":wm:c9.1", ":seq"],
                    Kind::Barrier | Kind::RateLimit => &[""],
                    Kind::DoubleBarrier => &[":p", ":e:17.0", ":ready", ":gen", ":seq"],
                };
                let channels: &[&str] = match kind {
                    Kind::Queue => &[":w:c9.1"],
                    Kind::Lock => &[":w:17.0", ":ch", ":uw:17.0"],
                    Kind::RwLock | Kind::Election => &[":w:17.0", ":ch"],
                    Kind::Semaphore => &[":w:17.0"],
                    Kind::Barrier | Kind::DoubleBarrier => &[":ch"],
                    Kind::RateLimit => &[],
                };
                suffixes
                    .iter()
                    .map(|suffix| format!("{p}{suffix}"))
                    .chain(channels.iter().map(|suffix| ch(format!("{p}{suffix}"))))
                    .collect()
            }
            Owner::Stm(name) => vec![keys.stm_key(&Name::new(name.as_str()).unwrap())],
            Owner::StmRevision => vec![keys.stm_revision()],
            Owner::Session(id) => vec![
                keys.session(*id),
                keys.registry(*id),
                ch(format!("{}:lost", keys.session(*id))),
            ],
        }
    }

    #[test]
    fn keys_never_collide_across_kinds_and_names() {
        const ALPHABET: [&str; 24] = [
            "a", "b", "k", "q", "e", "s", "t", "m", "{", "}", "/", ":", "%", "7", "D", "B", "2",
            "5", "é", "😀", ".", " ", "lock", "stm",
        ];
        const KINDS: [&str; 7] = ["lock", "rw", "elect", "queue", "barrier", "dbar", "sem"];
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let mut names: Vec<String> = [
            "stm}:k:x",
            "x}:lock:q",
            "x}:lock",
            "stm",
            "session:5",
            "session",
            "a",
            "a}:lock",
            "a}",
            "}",
            "{",
            "%7D",
            "%",
            "q/00001/x",
            "q",
            "é",
        ]
        .iter()
        .map(|name| (*name).to_owned())
        .collect();
        while names.len() < 3000 {
            let len = 1 + rng.below(10);
            let name: String = (0..len)
                .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                .collect();
            if Name::new(name.as_str()).is_ok() {
                names.push(name);
            }
        }
        names.sort();
        names.dedup();
        for ns in ["", "distsync:", "app/"] {
            let keys = Keys::new(ns, 0);
            let mut owners: std::collections::HashMap<String, Owner> =
                std::collections::HashMap::new();
            let mut claim = |owner: Owner| {
                for key in keys_of(&keys, &owner) {
                    assert!(
                        key.starts_with(&format!("{{{ns}")) || key.starts_with("ch|0|{"),
                        "{key} is outside the namespace {ns:?}"
                    );
                    if let Some(previous) = owners.insert(key.clone(), owner.clone()) {
                        assert_eq!(
                            previous, owner,
                            "{key} belongs to both {previous:?} and {owner:?}"
                        );
                    }
                }
            };
            claim(Owner::StmRevision);
            for id in [5, 17, 9] {
                claim(Owner::Session(id));
            }
            for name in &names {
                claim(Owner::Stm(name.clone()));
                for kind in KINDS {
                    claim(Owner::Primitive(kind, name.clone()));
                }
            }
        }
    }
}
