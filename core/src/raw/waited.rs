//! The answer of a waiting call built on its `try_` form.
//!
//! A backend often writes `lock` and `try_lock` (`dequeue` and `try_dequeue`, ...) as
//! one acquisition with waiting on or off, answering `Option<T>`. With waiting on it
//! answers only once it has something, so `None` there is a defect of the backend: it
//! is returned as [`Error::Backend`], naming the call, rather than a panic in the
//! caller's task.

use crate::error::{Error, Result};

/// `answer`, the outcome of the waiting form of `call` (on `backend`), which is never
/// `None` unless the backend is at fault.
///
/// ```
/// use distsync::store::raw::waited;
/// use distsync::Error;
///
/// assert_eq!(waited("example", "lock", Some(7)).unwrap(), 7);
/// let defect = waited::<u32>("example", "lock", None).unwrap_err();
/// assert!(matches!(defect, Error::Backend { .. }));
/// assert!(defect.to_string().contains("a waiting lock returned nothing"), "{defect}");
/// ```
///
/// # Errors
/// [`Error::Backend`] when `answer` is `None`.
pub fn waited<T>(backend: &'static str, call: &str, answer: Option<T>) -> Result<T> {
    answer.ok_or_else(|| {
        Error::backend(
            backend,
            format!("a waiting {call} returned nothing (a defect of the backend)"),
        )
    })
}
