//! Validated primitive names.

use std::fmt;

use crate::error::{Error, Result};

/// The longest name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Whether `name` is `<some name>/<segment>`: a record kept under another name.
pub(crate) fn ends_in_segment(name: &str, segment: &str) -> bool {
    name.strip_suffix(segment)
        .is_some_and(|parent| parent.ends_with('/'))
}

/// The validated name of a primitive (a lock, an election, a queue, an STM key, ...).
///
/// A name is UTF-8, 1 to [`MAX_NAME_LEN`] bytes long, holds no NUL byte, has no empty
/// `/`-separated segment, and neither starts nor ends with `/`. Every backend checks
/// names through this type, so an invalid name is the same typed error
/// ([`Error::InvalidName`]) everywhere and is never silently rewritten.
///
/// # How names become store keys
///
/// Every backend maps (primitive kind, name) pairs to store keys injectively: a queue
/// `a`, a queue `a/b`, a lock `a` and an STM key `a` never share a key, and every key
/// stays under the backend's namespace. Characters other backends treat specially
/// (`{`, `}`, `:`, `/`, `%`, non-ASCII) are valid in names; each backend escapes what
/// its store needs.
///
/// On etcd and the memory backend (see `recipes` for the full table):
/// - locks and elections use the name as it is, as etcd's Go client does:
///   `<ns><name>/<lease id in hex>`, so `etcdctl lock NAME` and distsync exclude each
///   other. As in Go, a lock and an election of the same name form one line of
///   contenders, and a lock `a` also waits behind holders of a lock `a/b`
///   (over-exclusion, never two holders): prefer sibling names (`a/main`, `a/b`);
/// - every other kind lives under `<ns>/<kind>/<escaped name>`, where the escaped name
///   is one key segment (`%` → `%25`, `/` → `%2F`, every other character kept), so
///   nested names and other kinds never meet there; no lock or election key can
///   start with `<ns>/`, since a name never starts with `/`.
///
/// ```
/// use distsync::Name;
/// assert!(Name::new("jobs/nightly").is_ok());
/// assert!(Name::new("jobs//nightly").is_err());
/// assert!(Name::new("").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// Validates `name`.
    ///
    /// # Errors
    /// [`Error::InvalidName`] saying which rule the name breaks.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("is empty")
        } else if name.len() > MAX_NAME_LEN {
            Some("is longer than 255 bytes")
        } else if name.contains('\0') {
            Some("contains a NUL byte")
        } else if name.starts_with('/') {
            Some("starts with '/'")
        } else if name.ends_with('/') {
            Some("ends with '/'")
        } else if name.contains("//") {
            Some("has an empty '/'-separated segment")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidName { name, reason }),
            None => Ok(Self(name)),
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<self>/<segment>`: the name of a record kept under this one. `too_long` is the
    /// [`Error::InvalidName`] reason when the two do not fit in [`MAX_NAME_LEN`].
    pub(crate) fn child(&self, segment: &str, too_long: &'static str) -> Result<Self> {
        let child = format!("{self}/{segment}");
        if child.len() > MAX_NAME_LEN {
            return Err(Error::InvalidName {
                name: self.0.clone(),
                reason: too_long,
            });
        }
        Self::new(child)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for Name {
    type Error = Error;
    fn try_from(value: &str) -> Result<Self> {
        Self::new(value)
    }
}

impl TryFrom<String> for Name {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        Self::new(value)
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case::one_segment("a")]
    #[case::segments("a/b")]
    #[case::punctuation("a-b_c.d")]
    #[case::non_ascii("λ/ünï")]
    #[case::longest(&"x".repeat(MAX_NAME_LEN))]
    fn accepts_valid_names(#[case] ok: &str) {
        assert_eq!(Name::new(ok).unwrap().as_str(), ok);
    }

    #[rstest]
    #[case::empty("", "is empty")]
    #[case::leading_slash("/a", "starts with '/'")]
    #[case::trailing_slash("a/", "ends with '/'")]
    #[case::empty_segment("a//b", "has an empty '/'-separated segment")]
    #[case::nul("a\0b", "contains a NUL byte")]
    #[case::too_long(&"x".repeat(MAX_NAME_LEN + 1), "is longer than 255 bytes")]
    fn rejects_invalid_names_with_typed_error(#[case] bad: &str, #[case] why: &str) {
        match Name::new(bad) {
            Err(Error::InvalidName { name, reason }) => {
                assert_eq!(name, bad);
                assert_eq!(reason, why);
            }
            other => panic!("{bad:?} gave {other:?}"),
        }
    }
}
