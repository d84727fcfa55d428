//! SIGINT (Ctrl-C) and SIGTERM, the two ways to interrupt `distsync`.

use std::io;

/// Which signal interrupted the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interrupt {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Interrupt {
    /// The signal, to forward it to CMD's process group.
    #[cfg(unix)]
    pub(crate) fn signal(self) -> rustix::process::Signal {
        match self {
            Interrupt::Interrupt => rustix::process::Signal::INT,
            Interrupt::Terminate => rustix::process::Signal::TERM,
        }
    }
}

/// The process's SIGINT and SIGTERM handlers, installed once at start-up so that no
/// signal arriving later kills the process before it has released what it holds.
pub(crate) struct Interrupts {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Interrupts {
    /// Installs the handlers. Must be called within the runtime.
    ///
    /// # Errors
    /// When the operating system refuses a handler.
    pub(crate) fn install() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Waits for the next SIGINT or SIGTERM. Cancel-safe: a signal that arrives while
    /// no one waits is kept for the next call.
    pub(crate) async fn recv(&mut self) -> Interrupt {
        #[cfg(unix)]
        {
            tokio::select! {
                Some(()) = self.interrupt.recv() => Interrupt::Interrupt,
                Some(()) = self.terminate.recv() => Interrupt::Terminate,
                else => std::future::pending().await,
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => Interrupt::Interrupt,
                Err(_) => std::future::pending().await,
            }
        }
    }
}
