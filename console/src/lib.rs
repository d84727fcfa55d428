//! A web console for operators: who holds what on any store, actions on it from a
//! browser, and the metrics Prometheus scrapes.
//!
//! [`router`] is an [axum](https://docs.rs/axum/0.8) `Router` a service mounts beside
//! its own routes; [`serve`] serves it alone on a listener, as `distsync console
//! --backend URL` does. It reads the store through the
//! [`Coordinator`](distsync_core::Coordinator) it is given, and nothing else:
//!
//! - **`GET /`**: one page (HTML, a script and a style sheet, no build step) that reads
//!   `/api/board` once per refresh and shows locks, read-write locks and semaphores
//!   (holders with their token, session and how long they have held, waiters in
//!   order), elections (leader, term, candidates), groups and shard owners, queues
//!   (ready, in flight, the oldest item's age, the dead-letter queue beside its queue),
//!   and sessions with what each holds. Hundreds of names page and filter by prefix.
//! - **`GET /api/board`**: the same as JSON (`filter`, `page` and `per_page` query
//!   parameters); `GET /api/dead-letters?queue=NAME`: a dead-letter queue's items.
//! - **`POST /api/actions/...`**: break a lock, ask its holder to release, ask an
//!   election's leader to hand over, requeue or drop a dead letter. Off unless
//!   [`ConsoleOptions::actions`] gives a token; a request without it gets `403 Forbidden`.
//! - **`GET /metrics`**: the Prometheus text format of the metrics layer's counters and
//!   histograms (when [`ConsoleOptions::metrics`] hands over the process's exporter)
//!   and of gauges read from the store: `distsync_store_up`, and per name
//!   `distsync_store_holders`, `distsync_store_waiters`, `distsync_store_queue_ready`,
//!   `distsync_store_queue_in_flight`, `distsync_store_queue_oldest_age_seconds`,
//!   `distsync_store_dead_letters` and `distsync_store_group_members`.
//!
//! # What it costs the store
//!
//! One status read of the console's prefix
//! ([`Coordinator::status`](distsync_core::Coordinator::status)) and one
//! [`Queue::oldest_age`](distsync_core::Queue::oldest_age) per listed queue, at most
//! once per [`ConsoleOptions::refresh`]: every open page and every scrape shares the
//! last read. A dead-letter queue's items are read only when a page asks
//! for them, and an action costs what its call costs.
//!
//! # Safe by default
//!
//! The page escapes every name and value (it only ever sets text, and its
//! `Content-Security-Policy` allows no inline script); the board shows the backend's
//! name, never its URL, and the store's errors, which never carry a password; actions
//! need the token in an `Authorization: Bearer` header (a page cannot be tricked into
//! sending it by another site), and each one is logged through `tracing` with the
//! address and the operator's name that asked. A store that does not answer shows as
//! down, and the page goes on asking.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use distsync::store::console::{serve, ConsoleOptions};
//!
//! let coordinator = distsync::connect("memory://").await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! serve(listener, coordinator, ConsoleOptions::new()).await?;
//! # Ok(()) }
//! ```

mod actions;
mod actions_token;
mod board;
mod metrics;
mod options;
mod page;
mod reading;
mod router;
mod serve;

pub use actions_token::ActionsToken;
pub use options::{ConsoleOptions, DEFAULT_PER_PAGE, DEFAULT_REFRESH};
pub use router::router;
pub use serve::serve;
