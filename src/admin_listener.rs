//! The admin endpoints' own listener, when no ingest stage serves them in
//! this process (the job role). A reload that moves `admin_listen` binds
//! the new address before the old server stops.

use std::sync::{Mutex, PoisonError};

use ingest_http::{serve_admin, AdminState};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One server at a time on the admin address.
pub struct AdminListener {
    state: AdminState,
    serving: Mutex<Option<(CancellationToken, JoinHandle<std::io::Result<()>>)>>,
}

impl AdminListener {
    /// Serves the admin routes on `address`.
    pub async fn start(address: &str, state: AdminState) -> Result<Self, String> {
        let admin = AdminListener { state, serving: Mutex::new(None) };
        let listener = admin.bind(address).await?;
        admin.replace(listener);
        Ok(admin)
    }

    /// Binds `address` (nothing is served on it yet).
    pub async fn bind(&self, address: &str) -> Result<TcpListener, String> {
        TcpListener::bind(address).await.map_err(|error| format!("cannot listen on admin_listen {address}: {error}"))
    }

    /// Serves on `listener`, then stops the previous server.
    pub fn replace(&self, listener: TcpListener) {
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve_admin(listener, self.state.clone(), stop.clone()));
        let previous = self.serving.lock().unwrap_or_else(PoisonError::into_inner).replace((stop, task));
        if let Some((stop, _)) = previous {
            stop.cancel();
        }
    }

    /// Stops serving and waits for the server to end.
    pub async fn stop(&self) {
        let serving = self.serving.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some((stop, task)) = serving {
            stop.cancel();
            if let Ok(Err(error)) = task.await {
                tracing::warn!(%error, "admin server ended with an error");
            }
        }
    }
}
