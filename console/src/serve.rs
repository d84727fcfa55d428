//! Serving the console on a listener of the caller's, for a process that has no HTTP
//! server of its own (`distsync console` is one).

use std::net::SocketAddr;

use distsync_core::Coordinator;
use tokio::net::TcpListener;

use crate::options::ConsoleOptions;
use crate::router::router;

/// Serves the console over `coordinator` on `listener` until the returned future is
/// dropped, with each request's peer address known to the action log.
///
/// # Errors
/// The server's I/O error (accepting connections failed for good).
///
/// # Cancel safety
/// Dropping the future stops serving: a request under way is cut short (the page asks
/// again) and an action under way is done or not, as its call's cancel safety says.
pub async fn serve(
    listener: TcpListener,
    coordinator: Coordinator,
    options: ConsoleOptions,
) -> std::io::Result<()> {
    let app = router(coordinator, options).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).await
}
