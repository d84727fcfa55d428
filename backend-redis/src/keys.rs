//! The key layout: every key starts with a hash tag `{<namespace>...}`.
//!
//! | what | key |
//! |---|---|
//! | a primitive's keys | `{<ns><name>}:<kind>:...` (kind: `lock`, `rw`, `elect`, `queue`, `barrier`, `dbar`) |
//! | a session | `{<ns>session:<id>}`, its registry `{<ns>session:<id>}:held` |
//! | an STM key | `{<ns>stm}:k:<name>`, the STM revision `{<ns>stm}:rev` |
//!
//! The keys of one primitive share one hash tag, hence one Redis Cluster slot; all STM
//! keys share one too. A name holding `{` or `}` only moves the tag boundary: the keys
//! of one primitive still share it, and distinct names still give distinct keys, since
//! nothing after the name contains `}`.

use distsync_core::Name;

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

    /// The prefix of every key of primitive `name` of `kind`: `{<ns><name>}:<kind>`.
    pub(crate) fn primitive(&self, name: &Name, kind: Kind) -> String {
        format!("{{{}{}}}:{}", self.ns, name, kind.as_str())
    }

    /// `{<ns>session:<id>}`.
    pub(crate) fn session(&self, id: u64) -> String {
        format!("{}{id}}}", self.session_prefix())
    }

    /// What [`Keys::session`] puts before the id.
    fn session_prefix(&self) -> String {
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
    fn names_with_braces_stay_distinct() {
        let keys = Keys::new("", 0);
        let a = keys.primitive(&Name::new("a}:lock").unwrap(), Kind::Lock);
        let b = keys.primitive(&Name::new("a").unwrap(), Kind::Lock);
        assert_ne!(a, b);
        assert!(a.starts_with("{a}:lock}"));
    }
}
