//! examples/shards.rs, run whole on the memory store with every event it and the
//! library log recorded: its workers' shards move at every join and at the kill, and a
//! run in which nothing goes wrong logs no error (a shard that moved away is an
//! expected event, not a failure). The example checks on its own that every item was
//! done exactly once.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

#[path = "../../examples/shards.rs"]
#[allow(dead_code)] // its `main`: the test calls `run`.
mod example;

/// Every event logged, as its level and a line of text.
#[derive(Clone, Default)]
struct Events {
    seen: Arc<Mutex<Vec<(Level, String)>>>,
}

impl Events {
    fn at(&self, level: Level) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(at, _)| *at == level)
            .map(|(_, line)| line.clone())
            .collect()
    }
}

/// An event's fields as `name=value` text.
struct Line<'a>(&'a mut String);

impl Visit for Line<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl Subscriber for Events {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = event.metadata().target().to_owned();
        event.record(&mut Line(&mut line));
        let level = *event.metadata().level();
        self.seen.lock().unwrap().push((level, line));
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

#[test]
fn a_run_on_memory_logs_no_error() {
    let events = Events::default();
    // On one thread, so that this subscriber sees every task of the run.
    let _recording = tracing::subscriber::set_default(events.clone());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(example::run("memory://"))
        .expect("the example runs");
    let errors = events.at(Level::ERROR);
    assert!(errors.is_empty(), "errors logged: {errors:#?}");
    // The run did meet shards that moved away (the workers join one after the other
    // and one is killed), so the absence of errors says something.
    let acquired = events
        .at(Level::DEBUG)
        .iter()
        .filter(|line| line.contains("shard acquired"))
        .count();
    assert!(
        acquired > 64,
        "only {acquired} holds taken on 64 shards: none moved"
    );
}
