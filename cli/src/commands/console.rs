//! `distsync console [PREFIX]`: the operators' web console over the store, served until
//! interrupted (see `distsync::store::console`).

use std::net::SocketAddr;

use distsync::store::console::{router, ActionsToken, ConsoleOptions};
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::args::ConsoleArgs;
use crate::context::Ctx;
use crate::exit::{self, Failure};

/// Serves the console on `--listen` until SIGINT or SIGTERM.
///
/// # Errors
/// Exit code 2 for a token file that cannot be read or holds a refused token, or an
/// address that cannot be listened on; 4 when serving fails.
pub(super) async fn run(ctx: &mut Ctx, args: ConsoleArgs) -> Result<u8, Failure> {
    let mut options = ConsoleOptions::new()
        .prefix(args.prefix.unwrap_or_default())
        .refresh(args.refresh);
    let actions = args.actions_token_file.is_some();
    if let Some(path) = &args.actions_token_file {
        let token =
            ActionsToken::from_file(path).map_err(|error| Failure::usage(error.to_string()))?;
        options = options.actions(token);
    }
    // The process's own metrics (the layer around every handle the console uses) at
    // /metrics; a process that already has a recorder keeps it and serves only the
    // store's gauges.
    match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => options = options.metrics(handle),
        Err(error) => {
            tracing::warn!(%error, "console: no Prometheus recorder for the process's metrics")
        }
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|error| Failure::usage(format!("cannot listen on {}: {error}", args.listen)))?;
    let address = listener.local_addr().unwrap_or(args.listen);
    let backend = ctx.coordinator.capabilities().backend;
    let mode = if actions { "actions on" } else { "read-only" };
    eprintln!("distsync: console on http://{address}/ ({backend}, {mode})");
    let app = router(ctx.coordinator.clone(), options)
        .into_make_service_with_connect_info::<SocketAddr>();
    // An interrupt ends the server where it stands: a page's request cut short is
    // asked again by the page, and an action under way is done or not, as its call's
    // cancel-safety says.
    tokio::select! {
        served = std::future::IntoFuture::into_future(axum::serve(listener, app)) => {
            served.map_err(|error| Failure::failed(format!("the console stopped: {error}")))?;
        }
        _ = ctx.interrupts.recv() => {}
    }
    Ok(exit::OK)
}
