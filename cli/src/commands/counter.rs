//! `distsync counter NAME [get|add N|cas OLD NEW|watch [--changes N]]`.

use crate::args::{CounterAction, CounterArgs};
use crate::context::Ctx;
use crate::exit::{self, Failure};
use crate::output::say;

/// Prints the counter's value (`get`, the default), adds to it and prints the new value
/// (`add N`), swaps OLD for NEW (`cas OLD NEW`: prints `swapped`, or `unchanged`
/// and exits 1), or prints the value and then every new value it sees (`watch`, with
/// [`distsync::Counter::changed`]: values, not writes, so a change undone before it
/// reads is not printed) until interrupted or after `--changes N`.
///
/// An `add` is sent once: when the store's reply is lost the command fails (exit 4)
/// and the add may or may not have been applied, so a script that must know reads
/// the value before adding again.
///
/// # Errors
/// See the exit codes in the crate docs.
pub(super) async fn run(ctx: &mut Ctx, args: CounterArgs) -> Result<u8, Failure> {
    let counter = ctx.coordinator.counter(&args.name)?;
    match args.action.unwrap_or(CounterAction::Get) {
        CounterAction::Get => {
            let value = ctx.wait(counter.get(), None).await?;
            say!("{value}");
        }
        CounterAction::Add { delta } => {
            let value = ctx.wait(counter.add(delta), None).await?;
            say!("{value}");
        }
        CounterAction::Cas { old, new } => {
            if ctx.wait(counter.compare_and_set(old, new), None).await? {
                say!("swapped");
            } else {
                say!("unchanged");
                return Ok(exit::NOT_NOW);
            }
        }
        CounterAction::Watch { changes } => {
            let mut value = ctx.wait(counter.get(), None).await?;
            say!("{value}");
            let mut seen = 0;
            while changes.is_none_or(|changes| seen < changes) {
                value = ctx.wait(counter.changed(value), None).await?;
                say!("{value}");
                seen += 1;
            }
        }
    }
    Ok(exit::OK)
}
