//! Which names a name prefix covers, as [`Backend::count_prefix`](crate::Backend::count_prefix)
//! and [`Backend::purge_prefix`](crate::Backend::purge_prefix) read it.

use crate::name::Name;

/// Whether `name` is `prefix` or lies under it (starts with `prefix/`): the names
/// whose state [`Backend::purge_prefix`](crate::Backend::purge_prefix) removes. A
/// prefix is whole segments, so `jobs` covers `jobs/a` but not `jobs2`.
///
/// ```
/// use distsync::store::raw::name_under;
/// use distsync::Name;
///
/// let prefix = Name::new("conf/run-1").unwrap();
/// assert!(name_under("conf/run-1", &prefix));
/// assert!(name_under("conf/run-1/lock/a", &prefix));
/// assert!(!name_under("conf/run-10/lock/a", &prefix));
/// assert!(!name_under("conf", &prefix));
/// ```
pub fn name_under(name: &str, prefix: &Name) -> bool {
    name.strip_prefix(prefix.as_str())
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}
