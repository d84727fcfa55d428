//! Standard input, line by line, without blocking the runtime.
//!
//! A dedicated thread does the blocking reads (as tokio advises for interactive input),
//! so the process can exit while a read is pending.

use std::io::BufRead;

use tokio::sync::mpsc;

/// Lines of standard input (without their line ending), until end of input.
pub(crate) struct Lines {
    receiver: mpsc::Receiver<String>,
}

impl Lines {
    /// Starts reading standard input on a thread of its own.
    pub(crate) fn spawn() -> Self {
        let (sender, receiver) = mpsc::channel(16);
        let spawned = std::thread::Builder::new()
            .name("distsync-stdin".into())
            .spawn(move || read_lines(&sender));
        if let Err(error) = spawned {
            // Without the thread the channel closes at once: treated as end of input.
            tracing::warn!(%error, "cannot start the standard input reader");
        }
        Self { receiver }
    }

    /// The next line, or `None` at end of input (or on a read error). Cancel-safe.
    pub(crate) async fn next(&mut self) -> Option<String> {
        self.receiver.recv().await
    }
}

fn read_lines(sender: &mpsc::Sender<String>) {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match input.read_until(b'\n', &mut buffer) {
            Ok(0) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buffer);
                let line = line.trim_end_matches(['\n', '\r']).to_owned();
                if sender.blocking_send(line).is_err() {
                    return;
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => {
                tracing::warn!(%error, "reading standard input failed; treating it as its end");
                return;
            }
        }
    }
}
