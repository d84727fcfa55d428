//! The spans of a queue's receive, ack and nack (see `distsync_core::delivery`), seen
//! by a subscriber that records every span's name and fields.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// One span: its name and its fields, as `name=value` text.
#[derive(Clone, Debug, Default)]
struct Seen {
    name: String,
    fields: Vec<(String, String)>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .rev()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }
}

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

/// Records every span (by id) with the fields given at creation and recorded later.
#[derive(Clone, Default)]
struct Recorder {
    spans: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    fn spans(&self) -> Vec<Seen> {
        self.spans.lock().unwrap().clone()
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut seen = Seen {
            name: span.metadata().name().to_owned(),
            fields: Vec::new(),
        };
        span.record(&mut Fields(&mut seen.fields));
        let mut spans = self.spans.lock().unwrap();
        spans.push(seen);
        Id::from_u64(u64::try_from(spans.len()).unwrap())
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut spans = self.spans.lock().unwrap();
        let index = usize::try_from(span.into_u64() - 1).unwrap();
        if let Some(seen) = spans.get_mut(index) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, _: &Event<'_>) {}

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

#[tokio::test(flavor = "current_thread")]
async fn receive_ack_and_nack_run_in_spans_naming_the_queue_delivery_and_attempt() {
    let recorder = Recorder::default();
    // The default subscriber of this thread: the current-thread runtime runs the
    // background nack of `nack_after` here too.
    let _default = tracing::subscriber::set_default(recorder.clone());
    let coordinator = distsync_kv::memory::connect("memory://").await.unwrap();
    let session = coordinator.session().await.unwrap();
    let jobs = coordinator.queue("jobs").unwrap();
    jobs.enqueue("a").await.unwrap();

    let first = jobs.receive(&session).await.unwrap();
    let first_id = first.id();
    first.nack().await.unwrap();
    let second = jobs.try_receive(&session).await.unwrap().unwrap();
    assert_ne!(second.id(), first_id, "a redelivery is a new delivery");
    let second_id = second.id();
    second.nack_after(Duration::ZERO);
    // The delayed nack runs in the background: wait (bounded) for the item.
    let third = tokio::time::timeout(Duration::from_secs(5), jobs.receive(&session))
        .await
        .expect("the item is back after the delayed nack")
        .unwrap();
    let third_id = third.id();
    third.ack().await.unwrap();

    let spans = recorder.spans();
    let named = |name: &str, id: u64| {
        spans
            .iter()
            .find(|span| span.name == name && span.field("delivery") == Some(&id.to_string()))
            .unwrap_or_else(|| panic!("no {name} span of delivery {id} in {spans:#?}"))
    };
    for (id, attempt) in [(first_id, "1"), (second_id, "2"), (third_id, "3")] {
        let receive = named("distsync.receive", id);
        assert_eq!(receive.field("queue"), Some("jobs"));
        assert_eq!(receive.field("backend"), Some("memory"));
        assert_eq!(receive.field("attempt"), Some(attempt));
    }
    let nack = named("distsync.nack", first_id);
    assert_eq!(
        (nack.field("queue"), nack.field("attempt")),
        (Some("jobs"), Some("1"))
    );
    let delayed = named("distsync.nack", second_id);
    assert_eq!(delayed.field("delay_ms"), Some("0"));
    let ack = named("distsync.ack", third_id);
    assert_eq!(
        (ack.field("queue"), ack.field("attempt")),
        (Some("jobs"), Some("3"))
    );
    assert!(
        !spans.iter().any(|span| span.name == "distsync.ack"
            && span.field("delivery") != Some(&third_id.to_string())),
        "only the last delivery was acknowledged: {spans:#?}"
    );
}
