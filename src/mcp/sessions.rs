//! `/mcp` sessions under the one rule of [`crate::budget`]: a session is a
//! holder's only while it is used. Each client address may open
//! `per_client` sessions, strangers together three quarters of `max`, the
//! node `max` (an `initialize` past them: 429); a session that sees no
//! request for `idle` is closed (its client gets 404 and, as MCP says,
//! starts a new one). Sessions are rmcp's own ([`LocalSessionManager`]);
//! this keeps their count and age.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use parking_lot::Mutex;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};
use rmcp::transport::streamable_http_server::session::{
    RestoreOutcome, ServerSseMessage, SessionId, SessionManager,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::budget::{Budget, Hold, Holder, Limits, Refusal, Standing};
use crate::metrics::Metrics;

tokio::task_local! {
    /// The place an `initialize` request took, handed to the session it
    /// creates.
    static OPENING: std::cell::RefCell<Option<Hold>>;
}

/// How many sessions, and for how long unused.
#[derive(Clone, Copy, Debug)]
pub struct Limit {
    pub max: usize,
    pub per_client: usize,
    pub idle: Duration,
}

/// rmcp's sessions, counted and expired.
pub struct Sessions {
    inner: LocalSessionManager,
    budget: Arc<Budget>,
    idle: Duration,
    open: Mutex<HashMap<SessionId, Open>>,
}

struct Open {
    _place: Hold,
    used: Instant,
}

impl Sessions {
    /// Sessions within `limit`; expired ones are closed every quarter of
    /// `limit.idle` (at least every second) until `cancel`.
    pub fn new(limit: Limit, metrics: Arc<Metrics>, cancel: CancellationToken) -> Arc<Self> {
        let mut inner = LocalSessionManager::default();
        // rmcp's own worker ends a session's work after as long.
        inner.session_config.keep_alive = Some(limit.idle);
        let sessions = Arc::new(Self {
            inner,
            budget: Budget::new(
                "mcp_sessions",
                Limits::shared(limit.max, limit.per_client),
                metrics,
            ),
            idle: limit.idle,
            open: Mutex::default(),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&sessions);
            let every = (limit.idle / 4).max(Duration::from_secs(1));
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let Some(sessions) = weak.upgrade() else {
                        return;
                    };
                    sessions.close_idle().await;
                }
            });
        }
        sessions
    }

    /// A place for a new session of `holder`, or why there is none.
    pub fn admit(&self, holder: Holder, standing: Standing) -> Result<Hold, Refusal> {
        self.budget.take(holder, standing, 1)
    }

    /// Runs `request` (an `initialize`) with `place` for the session it
    /// opens; a request that opens none gives the place back.
    pub async fn opening<F: Future>(place: Hold, request: F) -> F::Output {
        OPENING
            .scope(std::cell::RefCell::new(Some(place)), request)
            .await
    }

    /// Sessions open now.
    pub fn count(&self) -> usize {
        self.open.lock().len()
    }

    /// Closes the sessions unused for `idle`.
    pub async fn close_idle(&self) {
        let now = Instant::now();
        let idle: Vec<SessionId> = self
            .open
            .lock()
            .iter()
            .filter(|(_, o)| now.duration_since(o.used) >= self.idle)
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            tracing::debug!(session = %id, "an idle /mcp session closed");
            let _ = self.inner.close_session(&id).await;
            self.open.lock().remove(&id);
        }
    }

    fn touch(&self, id: &SessionId) {
        if let Some(open) = self.open.lock().get_mut(id) {
            open.used = Instant::now();
        }
    }
}

/// No place for a session: the `initialize` request's place was not taken
/// (a caller that skipped [`Sessions::admit`]) or the session was closed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no place for another /mcp session")]
    Full,
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
}

impl SessionManager for Sessions {
    type Error = Error;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Error> {
        let place = OPENING
            .try_with(|p| p.borrow_mut().take())
            .ok()
            .flatten()
            .map_or_else(|| self.admit(Holder::Unknown, Standing::Known), Ok)
            .map_err(|_| Error::Full)?;
        let (id, transport) = self.inner.create_session().await?;
        self.open.lock().insert(
            id.clone(),
            Open {
                _place: place,
                used: Instant::now(),
            },
        );
        Ok((id, transport))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Error> {
        self.touch(id);
        Ok(self.inner.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Error> {
        Ok(self.open.lock().contains_key(id) && self.inner.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Error> {
        let closed = self.inner.close_session(id).await;
        self.open.lock().remove(id);
        Ok(closed?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Error> {
        self.touch(id);
        Ok(self.inner.create_stream(id, message).await?)
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Error> {
        self.touch(id);
        Ok(self.inner.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Error> {
        self.touch(id);
        Ok(self.inner.create_standalone_stream(id).await?)
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Error> {
        self.touch(id);
        Ok(self.inner.resume(id, last_event_id).await?)
    }

    async fn restore_session(
        &self,
        _id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Error> {
        // Sessions live in this process only: a closed one is gone.
        Ok(RestoreOutcome::NotSupported)
    }
}
