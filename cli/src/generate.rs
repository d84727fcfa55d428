//! `distsync completions SHELL` and `distsync man`: generated from the grammar in
//! [`crate::args`], so they never drift from what the binary accepts.

use std::io::{self, Write};

/// Writes the completion script for `shell` to standard output.
///
/// # Errors
/// Writing to standard output failed.
pub(crate) fn completions(shell: clap_complete::Shell) -> io::Result<()> {
    let mut out = io::stdout().lock();
    clap_complete::generate(shell, &mut crate::args::command(), "distsync", &mut out);
    out.flush()
}

/// Writes the man page (roff) to standard output: the top-level page, with every
/// subcommand listed under SUBCOMMANDS and the exit codes, backends and durations of
/// `--help` after them.
///
/// # Errors
/// Writing to standard output failed.
pub(crate) fn man() -> io::Result<()> {
    let mut out = io::stdout().lock();
    clap_mangen::Man::new(crate::args::command()).render(&mut out)?;
    out.flush()
}
