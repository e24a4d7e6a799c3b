//! Serving a built [`App`]: plain or TLS, with graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::app::App;

impl App {
    /// Serves on `listener` until `shutdown` completes; then stops accepting,
    /// lets in-flight requests finish (their session writes included) for at
    /// most the shutdown time-out, writes pending activity counters and
    /// closes the store's and the database's pools.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.serve_on(listener, shutdown).await
    }

    /// Serves TLS on `listener` with `tls` (see [`crate::tls`]).
    pub async fn serve_tls(
        self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        // `tap_io` gives the listener axum's `ConnectInfo<SocketAddr>` support.
        let listener = axum::serve::ListenerExt::tap_io(crate::tls::TlsListener::new(listener, tls)?, |_| {});
        self.serve_on(listener, shutdown).await
    }

    async fn serve_on<L>(
        self,
        listener: L,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()>
    where
        L: axum::serve::Listener<Addr = SocketAddr>,
        SocketAddr: for<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
    {
        let (signalled_tx, mut signalled_rx) = tokio::sync::watch::channel(false);
        let graceful = {
            let mut rx = signalled_tx.subscribe();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        tokio::spawn(async move {
            shutdown.await;
            let _ = signalled_tx.send(true);
        });
        let service = self.router.into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(listener, service).with_graceful_shutdown(graceful);
        let deadline = self.shutdown_timeout;
        let overdue = async move {
            let _ = signalled_rx.wait_for(|s| *s).await;
            tracing::info!(deadline = ?deadline, "shutting down: no new connections; finishing in-flight requests");
            tokio::time::sleep(deadline).await;
        };
        let result = tokio::select! {
            result = server => result,
            _ = overdue => {
                tracing::warn!("in-flight requests did not finish within the shutdown time-out; stopping anyway");
                Ok(())
            }
        };
        for task in &self.background {
            task.abort();
        }
        let db = self.state.db.clone();
        if let Err(error) = self.state.activity.flush(&db).await {
            tracing::warn!(%error, "writing activity stats at shutdown failed");
        }
        if let Some(close) = &self.close_store {
            close().await;
        }
        db.close().await;
        result
    }
}
