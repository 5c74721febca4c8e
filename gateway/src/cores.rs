//! Serving the main listener per core (`server.runtime = "per-core"`, the default): a thread per
//! worker, each with a single-threaded runtime of its own, all accepting from the same listening
//! socket — as nginx's workers do. A connection, its requests, and the cache fills and writes they
//! start stay on the thread that accepted it: no work stealing, no waking of another thread for a
//! cache hit. Which thread takes a connection, and when a busy thread hands some of its connections
//! to another, is `balance.rs`. The gateway's background work (the budget's dispatcher, polls, key
//! refreshes) and the side listeners stay on the shared runtime.

use std::future::Future;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpListener;

use crate::app::App;
use crate::balance::{CoreShare, Cores};
use crate::server::{self, Connections, Limits};

/// Serves `app` on `limits.cores` threads until `shutdown` resolves and their connections have
/// finished; answers when every thread has stopped.
pub(crate) async fn serve(
    listener: TcpListener,
    app: App,
    tag_peer: bool,
    limits: Limits,
    connections: Arc<Connections>,
    moved: Counter,
    shutdown: impl Future<Output = ()> + Clone + Send + 'static,
) {
    let listener = match listener.into_std() {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "the listener could not be shared between threads");
            return;
        }
    };
    let mut stopped = Vec::new();
    let cores = limits.cores.max(1);
    let (shared, inboxes) = Cores::new(cores, limits.busy, limits.idle_to_move, moved);
    for (core, inbox) in inboxes.into_iter().enumerate() {
        // Each thread's own handle on the listening socket, registered with its own runtime.
        // (One socket shared, not one per thread with `SO_REUSEPORT`: measured here, the kernel's
        // spreading of connections over such sockets served fewer requests, with a longer tail.)
        let socket = match listener.try_clone() {
            Ok(socket) => socket,
            Err(error) => {
                tracing::error!(%error, core, "the listener could not be shared with a thread");
                continue;
            }
        };
        let (app, connections, shutdown) = (app.clone(), connections.clone(), shutdown.clone());
        let share = CoreShare { cores: shared.clone(), core };
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name(format!("agora-gateway-core-{core}")).spawn(move || {
            let _done = done;
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => return tracing::error!(%error, core, "a core's runtime could not be built"),
            };
            runtime.block_on(async move {
                match TcpListener::from_std(socket) {
                    Ok(listener) => {
                        tokio::spawn(share.clone().meter());
                        server::serve(listener, app, tag_peer, limits, connections, shutdown, Some((share, inbox)))
                            .await;
                    }
                    Err(error) => tracing::error!(%error, core, "a core could not listen"),
                }
            });
        });
        match thread {
            Ok(_) => stopped.push(finished),
            Err(error) => tracing::error!(%error, core, "a core's thread could not be started"),
        }
    }
    // Only the threads' handles keep the socket open: when they stop accepting, it closes.
    drop(listener);
    // (A thread that ends, however, drops its sender.)
    futures::future::join_all(stopped).await;
}
