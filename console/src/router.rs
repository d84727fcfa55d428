//! The console's routes over one coordinator.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use distsync_core::{ConsumerOptions, Coordinator};
use serde::Deserialize;
use serde_json::json;

use crate::actions;
use crate::board::{holds_of, shown, Board, BoardQuery};
use crate::metrics;
use crate::options::ConsoleOptions;
use crate::page;
use crate::reading::Reading;

/// What every route shares: the read of the store and the options.
#[derive(Clone, Debug)]
pub(crate) struct Console {
    pub(crate) reading: Arc<Reading>,
    pub(crate) options: Arc<ConsoleOptions>,
}

impl Console {
    /// The coordinator the console reads and acts through.
    pub(crate) fn coordinator(&self) -> &Coordinator {
        self.reading.coordinator()
    }

    /// The backend's name, as the board and the metrics show it.
    pub(crate) fn backend(&self) -> &'static str {
        self.coordinator().capabilities().backend
    }
}

/// The console over `coordinator` (see the [crate docs](crate)): the page at `/`, its
/// JSON under `/api/`, the actions under `/api/actions/` (when
/// [`ConsoleOptions::actions`] is set), and `/metrics`.
///
/// Mount it where a service serves, e.g. `Router::new().nest("/distsync", router(...))`
/// (the page asks for its script, style and data by relative paths). The action log
/// names the address a request came from when the server is run with
/// `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn router(coordinator: Coordinator, options: ConsoleOptions) -> Router {
    let reading = Reading::new(coordinator, options.prefix.clone(), options.refresh);
    let console = Console {
        reading: Arc::new(reading),
        options: Arc::new(options),
    };
    Router::new()
        .route("/", get(page::html))
        .route("/console.js", get(page::script))
        .route("/console.css", get(page::style))
        .route("/api/board", get(board))
        .route("/api/sessions/{id}", get(session_holds))
        .route("/api/dead-letters", get(dead_letters))
        .route("/api/actions/break", post(actions::break_lock))
        .route(
            "/api/actions/request-release",
            post(actions::request_release),
        )
        .route("/api/actions/prefer", post(actions::prefer))
        .route("/api/actions/requeue", post(actions::requeue))
        .route("/api/actions/drop", post(actions::drop_dead_letter))
        .route("/metrics", get(metrics::scrape))
        .with_state(console)
}

/// `GET /api/board`: the board for the query.
async fn board(State(console): State<Console>, Query(query): Query<BoardQuery>) -> Response {
    let snapshot = console.reading.latest().await;
    let board = Board::new(
        &snapshot,
        &query,
        console.options.actions.is_some(),
        console.options.per_page,
        console.backend(),
        console.reading.prefix(),
    );
    fresh(Json(board).into_response())
}

/// `GET /api/sessions/{id}`: what the session holds or waits for, from the last read.
async fn session_holds(State(console): State<Console>, Path(id): Path<String>) -> Response {
    let snapshot = console.reading.latest().await;
    match &snapshot.outcome {
        Ok(store) => fresh(Json(json!({ "holds": holds_of(&store.report, &id) })).into_response()),
        Err(error) => unavailable(error),
    }
}

/// Which dead-letter queue to list: its queue's name.
#[derive(Debug, Deserialize)]
struct DeadLettersQuery {
    queue: String,
}

/// `GET /api/dead-letters?queue=NAME`: the items of `NAME`'s dead-letter queue, each as
/// text and in base64 (what an action names it by). Read on each request, through
/// [`Consumer::dead_letters`](distsync_core::Consumer::dead_letters).
async fn dead_letters(
    State(console): State<Console>,
    Query(query): Query<DeadLettersQuery>,
) -> Response {
    let listed = async {
        console
            .coordinator()
            .consumer(&query.queue, ConsumerOptions::default())?
            .dead_letters()
            .await
    }
    .await;
    match listed {
        Ok(items) => {
            let items: Vec<_> = items
                .iter()
                .map(|item| json!({ "text": shown(item), "item": STANDARD.encode(item) }))
                .collect();
            fresh(Json(json!({ "queue": query.queue, "items": items })).into_response())
        }
        Err(error) => unavailable(&error.to_string()),
    }
}

fn unavailable(error: &str) -> Response {
    let body = Json(json!({ "up": false, "error": error }));
    fresh((StatusCode::SERVICE_UNAVAILABLE, body).into_response())
}

/// Marks a response as never to be cached: it is the store's state of the moment.
fn fresh(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
