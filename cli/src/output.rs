//! The result lines on standard output.

/// Writes one result line to standard output and flushes it, so that a script reading
/// the pipe sees it at once. A closed pipe is ignored: what is held is still released.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, $($arg)*);
        let _ = out.flush();
    }};
}

pub(crate) use say;

/// A stored value as text (invalid UTF-8 shown with replacement characters).
pub(crate) fn text(value: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(value)
}
