//! Run profiles: which cases a run may start, by the control over the store they need.
//!
//! A team runs the suite in CI against the store it deploys, where the harness has
//! credentials but no control over the server: it cannot restart it, kill its members
//! or reconfigure it. The [`Profile::Safe`] profile leaves out every case whose
//! [`Hook`]s need that control ([`controls_server`]); what stays are faults the
//! harness makes on its own side of the connection (holders in child processes it
//! kills or pauses, the partition proxy between one client and the store, a second
//! client, a session ended with the store's own client tool).

use std::fmt;
use std::str::FromStr;

use crate::faults::Hook;

/// Which cases a run starts. [`Profile::Full`] (every case) is the default.
///
/// ```
/// use distsync_conformance::{find, Profile};
///
/// let restart = find("server_restart_durable_state").unwrap();
/// assert!(Profile::Safe.leaves_out(restart.hooks).is_some());
/// assert!(Profile::Full.leaves_out(restart.hooks).is_none());
/// assert_eq!("safe".parse::<Profile>(), Ok(Profile::Safe));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Only the cases that need no control over the store server; the others are
    /// reported [`crate::Outcome::NotRun`].
    Safe,
    /// Every case (those whose hooks the harness cannot offer are unsupported).
    #[default]
    Full,
}

impl Profile {
    /// `safe` or `full`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Safe => "safe",
            Self::Full => "full",
        }
    }

    /// Why this profile does not run a case that needs `hooks` (its
    /// [`crate::Case::hooks`]), or `None` if it runs it.
    pub fn leaves_out(self, hooks: &[Hook]) -> Option<String> {
        match self {
            Self::Full => None,
            Self::Safe => hooks
                .iter()
                .find(|hook| controls_server(**hook))
                .map(|hook| {
                    format!(
                        "not run in the safe profile: needs {hook}, which takes control over \
                         the store server"
                    )
                }),
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`Profile`]: the text was neither `safe` nor `full`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownProfile(pub String);

impl fmt::Display for UnknownProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown profile {:?} (expected safe or full)", self.0)
    }
}

impl std::error::Error for UnknownProfile {}

impl FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "safe" => Ok(Self::Safe),
            "full" => Ok(Self::Full),
            other => Err(UnknownProfile(other.to_owned())),
        }
    }
}

/// Whether `hook` needs control over the store server (so [`Profile::Safe`] leaves its
/// cases out):
///
/// | hook | controls the server | why |
/// |---|---|---|
/// | [`Hook::PrivateServer`] | yes | starts, kills and restarts a server of its own |
/// | [`Hook::Cluster`] | yes | kills cluster members (the raft leader) |
/// | [`Hook::Failover`] | yes | pauses a replica and kills the primary |
/// | [`Hook::EvictingServer`] | yes | a server configured to evict keys |
/// | [`Hook::GoPeer`] | yes | a locally built Go program beside the store |
/// | [`Hook::FreshStore`] | yes | a private server (or an in-process store) of the case's own |
/// | [`Hook::KillSession`] | no | ends the run's own session with the store's client tool |
/// | [`Hook::SessionTakeover`] | no | rewrites the run's own session record |
/// | [`Hook::ChildHolder`] | no | a holder in a child process of the harness, killed |
/// | [`Hook::PausedHolder`] | no | a holder of the harness, paused |
/// | [`Hook::AnyExternalHolder`] | no | either of the two above |
/// | [`Hook::SecondClient`] | no | another client of the same store |
/// | [`Hook::Partition`] | no | a proxy between one client of the harness and the store |
/// | [`Hook::CallerTransactions`] | no | tables of the case's own in a database beside the store |
///
/// The match has no wildcard arm, so a hook added to [`Hook`] does not compile until it
/// is classified here.
pub fn controls_server(hook: Hook) -> bool {
    match hook {
        Hook::KillSession
        | Hook::SessionTakeover
        | Hook::ChildHolder
        | Hook::PausedHolder
        | Hook::AnyExternalHolder
        | Hook::SecondClient
        | Hook::Partition
        | Hook::CallerTransactions => false,
        Hook::PrivateServer
        | Hook::Cluster
        | Hook::Failover
        | Hook::EvictingServer
        | Hook::GoPeer
        | Hook::FreshStore
        | Hook::PowerLoss => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_safe_profile_leaves_out_cases_with_a_server_hook_only() {
        let restart = &[Hook::SecondClient, Hook::PrivateServer];
        let reason = Profile::Safe.leaves_out(restart).expect("left out");
        assert!(reason.contains("a private server to restart"), "{reason}");
        assert_eq!(Profile::Full.leaves_out(restart), None);
        for client_side in [
            &[Hook::ChildHolder, Hook::Partition][..],
            &[Hook::PausedHolder, Hook::KillSession],
            &[],
        ] {
            assert_eq!(
                Profile::Safe.leaves_out(client_side),
                None,
                "{client_side:?}"
            );
        }
        for hook in [
            Hook::Cluster,
            Hook::Failover,
            Hook::EvictingServer,
            Hook::GoPeer,
        ] {
            assert!(controls_server(hook), "{hook:?}");
        }
    }

    #[test]
    fn profiles_parse_and_print() {
        for profile in [Profile::Safe, Profile::Full] {
            assert_eq!(profile.as_str().parse::<Profile>(), Ok(profile));
        }
        assert!("fast".parse::<Profile>().is_err());
        assert_eq!(Profile::default(), Profile::Full);
    }
}
