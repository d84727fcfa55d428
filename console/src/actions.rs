//! What an operator may do from the page, each a `POST` with the actions token:
//!
//! | path | body | call |
//! |---|---|---|
//! | `/api/actions/break` | `{"name"}` | [`Coordinator::break_lock`]: ends the holder's session, and with it everything else that session holds (the page shows what before it asks) |
//! | `/api/actions/request-release` | `{"name"}` | [`Coordinator::request_release`]: the holder's `release_requested()` fires; it decides |
//! | `/api/actions/prefer` | `{"name", "candidate"}` | [`Coordinator::prefer`]: asks the leader to hand over to the candidate (a session id, as listed); the leader decides |
//! | `/api/actions/requeue` | `{"queue", "item"}` | [`Consumer::redrive_item`](distsync_core::Consumer::redrive_item): the dead letter (base64) goes back to its queue |
//! | `/api/actions/drop` | `{"queue", "item"}` | [`Consumer::purge_item`](distsync_core::Consumer::purge_item): the dead letter is deleted |
//!
//! An action is answered with JSON: `{"done": true, ...}` when it acted, `{"done":
//! false, "why"}` when there was nothing to act on (no holder, no leader, no such
//! item). A request without the token, or any request while actions are off, gets
//! `403 Forbidden`; a bad name `400`; a store error `502`. Each action is logged at
//! `WARN` through `tracing` with the address it came from, the operator's name the page
//! sends (`X-Distsync-Operator`, as typed into the page; "unnamed" without one), what
//! was asked and what was done.

use std::net::SocketAddr;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use distsync_core::session::SessionId;
#[cfg(doc)]
use distsync_core::Coordinator;
use distsync_core::{ConsumerOptions, Error};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::router::Console;

/// The header that carries the operator's name, for the log.
pub(crate) const OPERATOR_HEADER: &str = "x-distsync-operator";

/// A lock named in an action.
#[derive(Debug, Deserialize)]
pub(crate) struct NameBody {
    name: String,
}

/// An election and the candidate to hand over to.
#[derive(Debug, Deserialize)]
pub(crate) struct PreferBody {
    name: String,
    /// The candidate's session id, in hexadecimal as the board lists it.
    candidate: String,
}

/// A dead letter: its queue (the consumed queue's name) and the item in base64.
#[derive(Debug, Deserialize)]
pub(crate) struct DeadLetterBody {
    queue: String,
    item: String,
}

/// Who asked, for the log.
pub(crate) struct Asker {
    from: String,
    operator: String,
}

/// An action's asker is named only once the request carries the token: every action
/// handler takes one, so none can act without it (403 otherwise, before the body is
/// read).
impl FromRequestParts<Console> for Asker {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Response> {
        let from = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(address)| *address);
        authorize(console, &parts.headers, from).map_err(refusal)
    }
}

/// Checks the token and names the asker, or says why the action is refused (403).
fn authorize(
    console: &Console,
    headers: &HeaderMap,
    from: Option<SocketAddr>,
) -> Result<Asker, &'static str> {
    let Some(token) = &console.options.actions else {
        return Err("actions are off: the console was started without an actions token");
    };
    let offered = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !token.matches(offered) {
        tracing::warn!(from = ?from, "console: an action was refused: no valid actions token");
        return Err("the actions token is missing or wrong");
    }
    let operator = headers
        .get(OPERATOR_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(|name| {
            name.chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unnamed".to_owned());
    Ok(Asker {
        from: from.map_or_else(|| "unknown".to_owned(), |addr| addr.to_string()),
        operator,
    })
}

fn refusal(why: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        Json(json!({ "done": false, "why": why })),
    )
        .into_response()
}

/// The answer to a failed call: 400 for what the caller got wrong, 502 for the store.
fn failure(error: &Error) -> Response {
    let status = match error {
        Error::InvalidName { .. } | Error::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        Error::Unsupported { .. } => StatusCode::NOT_IMPLEMENTED,
        _ => StatusCode::BAD_GATEWAY,
    };
    (
        status,
        Json(json!({ "done": false, "why": error.to_string() })),
    )
        .into_response()
}

fn nothing(why: &str) -> Response {
    Json(json!({ "done": false, "why": why })).into_response()
}

/// `POST /api/actions/break`.
pub(crate) async fn break_lock(
    State(console): State<Console>,
    asker: Asker,
    Json(body): Json<NameBody>,
) -> Response {
    let outcome = console.coordinator().break_lock(&body.name).await;
    console.reading.forget().await;
    match outcome {
        Ok(Some(broken)) => {
            tracing::warn!(
                from = %asker.from, operator = %asker.operator, lock = %body.name,
                session = %broken.session, token = ?broken.token.map(|t| t.0),
                "console: broke the lock (ended the holder's session)"
            );
            done(json!({
                "session": broken.session.to_string(),
                "token": broken.token.map(|t| t.0),
            }))
        }
        Ok(None) => nothing("the lock has no holder"),
        Err(error) => failure(&error),
    }
}

/// `POST /api/actions/request-release`.
pub(crate) async fn request_release(
    State(console): State<Console>,
    asker: Asker,
    Json(body): Json<NameBody>,
) -> Response {
    match console.coordinator().request_release(&body.name).await {
        Ok(Some(request)) => {
            tracing::warn!(
                from = %asker.from, operator = %asker.operator, lock = %body.name,
                token = ?request.token.map(|t| t.0), "console: asked the lock's holder to release"
            );
            done(json!({ "token": request.token.map(|t| t.0) }))
        }
        Ok(None) => nothing("the lock has no holder"),
        Err(error) => failure(&error),
    }
}

/// `POST /api/actions/prefer`.
pub(crate) async fn prefer(
    State(console): State<Console>,
    asker: Asker,
    Json(body): Json<PreferBody>,
) -> Response {
    let Ok(candidate) = u64::from_str_radix(&body.candidate, 16).map(SessionId) else {
        return failure(&Error::InvalidArgument(format!(
            "{:?} is not a session id (hexadecimal, as the board lists it)",
            body.candidate
        )));
    };
    match console.coordinator().prefer(&body.name, candidate).await {
        Ok(Some(request)) => {
            tracing::warn!(
                from = %asker.from, operator = %asker.operator, election = %body.name,
                candidate = %candidate, term = request.term.0,
                "console: asked the leader to hand over"
            );
            done(json!({ "term": request.term.0 }))
        }
        Ok(None) => nothing("the election has no leader"),
        Err(error) => failure(&error),
    }
}

/// `POST /api/actions/requeue`.
pub(crate) async fn requeue(
    State(console): State<Console>,
    asker: Asker,
    Json(body): Json<DeadLetterBody>,
) -> Response {
    dead_letter(console, asker, body, true).await
}

/// `POST /api/actions/drop`.
pub(crate) async fn drop_dead_letter(
    State(console): State<Console>,
    asker: Asker,
    Json(body): Json<DeadLetterBody>,
) -> Response {
    dead_letter(console, asker, body, false).await
}

async fn dead_letter(
    console: Console,
    asker: Asker,
    body: DeadLetterBody,
    requeue: bool,
) -> Response {
    let Ok(item) = STANDARD.decode(&body.item) else {
        return failure(&Error::InvalidArgument("the item is not base64".into()));
    };
    let outcome = async {
        let consumer = console
            .coordinator()
            .consumer(&body.queue, ConsumerOptions::default())?;
        if requeue {
            consumer.redrive_item(&item).await
        } else {
            consumer.purge_item(&item).await
        }
    }
    .await;
    console.reading.forget().await;
    let what = if requeue { "requeued" } else { "dropped" };
    match outcome {
        Ok(true) => {
            tracing::warn!(
                from = %asker.from, operator = %asker.operator, queue = %body.queue,
                bytes = item.len(), "console: {what} a dead letter"
            );
            done(json!({}))
        }
        Ok(false) => {
            nothing("no such item in the dead-letter queue (moved or held by someone else)")
        }
        Err(error) => failure(&error),
    }
}

fn done(mut fields: Value) -> Response {
    fields["done"] = Value::Bool(true);
    Json(fields).into_response()
}
