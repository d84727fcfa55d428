//! The controlling terminal, handed to CMD's process group while CMD runs.
//!
//! CMD runs in a process group of its own (see `watchdog`), which a terminal treats as
//! a background job: a CMD that reads the terminal would be stopped (SIGTTIN). When
//! `distsync` runs in the terminal's foreground with the terminal as its standard input,
//! it makes CMD's group the foreground while CMD runs, as a shell does for a job, and
//! takes the terminal back afterwards. Ctrl-C then reaches CMD's group directly.

use std::io::IsTerminal as _;

use rustix::process::{kill_process_group, Pid, Signal};

/// The terminal lent to CMD's group; dropped, `distsync`'s group is the foreground again.
pub(crate) struct Lent {
    own_group: Pid,
}

/// Makes `group` the terminal's foreground group when standard input is a terminal
/// whose foreground is `distsync`'s own group; `None` otherwise (nothing to lend).
pub(crate) fn lend(group: i32) -> Option<Lent> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return None;
    }
    let own_group = rustix::process::getpgrp();
    if rustix::termios::tcgetpgrp(&stdin).ok()? != own_group {
        return None;
    }
    let group = Pid::from_raw(group)?;
    if let Err(error) = rustix::termios::tcsetpgrp(&stdin, group) {
        tracing::debug!(%error, "handing the terminal to the command failed");
        return None;
    }
    // A CMD that read the terminal before it was its own has been stopped: go on.
    let _ = kill_process_group(group, Signal::CONT);
    Some(Lent { own_group })
}

impl Drop for Lent {
    fn drop(&mut self) {
        use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal as Sig};
        // From the background, setting the foreground raises SIGTTOU (which stops the
        // process) unless the caller blocks it: block it on this thread for the call.
        let mut ttou = SigSet::empty();
        ttou.add(Sig::SIGTTOU);
        let mut before = SigSet::empty();
        let blocked = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut before));
        if let Err(error) = rustix::termios::tcsetpgrp(std::io::stdin(), self.own_group) {
            tracing::debug!(%error, "taking the terminal back failed");
        }
        if blocked.is_ok() {
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&before), None);
        }
    }
}
