//! The secret that turns the console's actions on.

use std::fmt;
use std::path::Path;

use distsync_core::{Error, Result};

/// The token a request must carry (`Authorization: Bearer <token>`) for the console to
/// act: break a lock, ask a holder to release, ask a leader to hand over, requeue or
/// drop a dead letter. Without one ([`ConsoleOptions::actions`](crate::ConsoleOptions::actions)
/// not called) the console is read-only.
///
/// Its `Debug` output hides the secret, and it is compared in constant time.
#[derive(Clone)]
pub struct ActionsToken(String);

impl ActionsToken {
    /// The token `secret`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when it is shorter than 16 characters (a token an
    /// attacker on the network could guess) or holds whitespace or control characters
    /// (which an HTTP header cannot carry as given).
    pub fn new(secret: impl Into<String>) -> Result<Self> {
        let secret = secret.into();
        if secret.chars().count() < 16 {
            return Err(Error::InvalidArgument(
                "the actions token must be at least 16 characters".into(),
            ));
        }
        if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::InvalidArgument(
                "the actions token must not hold whitespace or control characters".into(),
            ));
        }
        Ok(Self(secret))
    }

    /// The token in the file at `path`, without the line break that ends it (as
    /// `--actions-token-file` reads it).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the file cannot be read (its path is named, its
    /// content never is) or its token is refused by [`ActionsToken::new`].
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            Error::InvalidArgument(format!(
                "cannot read the actions token file {}: {error}",
                path.display()
            ))
        })?;
        Self::new(text.trim_end_matches(['\n', '\r']))
    }

    /// Whether `offered` is the token, compared in time that does not depend on where
    /// the two first differ.
    pub(crate) fn matches(&self, offered: &str) -> bool {
        let (expected, offered) = (self.0.as_bytes(), offered.as_bytes());
        let differing = expected
            .iter()
            .zip(offered)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        differing == 0 && expected.len() == offered.len()
    }
}

impl fmt::Debug for ActionsToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ActionsToken(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_spaced_tokens_are_refused_and_debug_hides_the_secret() {
        assert!(matches!(
            ActionsToken::new("short"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            ActionsToken::new("sixteen chars ok"),
            Err(Error::InvalidArgument(_))
        ));
        let token = ActionsToken::new("0123456789abcdef").unwrap();
        assert!(token.matches("0123456789abcdef"));
        assert!(!token.matches("0123456789abcdeX"));
        assert!(!token.matches("0123456789abcdef0"));
        assert!(!token.matches(""));
        assert!(!format!("{token:?}").contains("0123"));
    }
}
