//! Inbound streams of the mesh's stream protocols (`stream`, `upload`,
//! `tool`), admitted under the one rule of [`crate::budget`]:
//!
//! 1. a new stream takes a place among the streams whose first frame is
//!    awaited (`<protocol>_opening`: 8 per peer, 256 in all, strangers 192
//!    together) within the peer's rate, and must bring that frame at the
//!    steady pace (first bytes within 10 s, then 16 KiB every 10 s), its
//!    bytes counted as they arrive (`<protocol>_frame_bytes`: 16 MiB per
//!    peer, 64 MiB in all, strangers 48 MiB; past them the stream is
//!    closed);
//! 2. only with its frame does it take a place among the requests served
//!    (`<protocol>_serving`: per peer and in all as each protocol says,
//!    strangers three quarters together).
//!
//! So a peer that opens streams and sends nothing, or trickles, holds none
//! of the places served requests need, and strangers together never hold
//! what trusted peers and members need. A stream refused at step 1 is
//! answered when a place among the refusals is free (its frame read for
//! 2 s), else reset; refused at step 2, it is answered at once.

use std::sync::Arc;
use std::time::Duration;

use ::http::StatusCode;
use futures::StreamExt;
use libp2p::PeerId;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::quota::{PeerRate, over_quota};
use super::{ApiError, Core};
use crate::budget::{Budget, Hold, Holder, Limits, Metered, Pace, Paced, Refusal, Standing};
use crate::network::frames;

/// Streams awaiting their first frame, per peer and in all.
const OPENING_PER_PEER: usize = 8;
const OPENING_AT_ONCE: usize = 256;
/// Bytes of first frames being read, per peer and in all (a frame is at
/// most 5 MiB; those over 1 MiB of body travel as uploads, in parts).
const FRAME_BYTES_PER_PEER: usize = 16 << 20;
const FRAME_BYTES_AT_ONCE: usize = 64 << 20;
/// Refused streams answered at once, per peer and in all (more are
/// reset), and how long the first frame of one is waited for.
const REFUSALS_PER_PEER: usize = 8;
const REFUSALS_AT_ONCE: usize = 64;
const REFUSAL_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// How one protocol's inbound streams are admitted.
pub(super) struct Inbound {
    /// What its requests are called in refusals ("tool calls").
    what: &'static str,
    /// Largest first frame.
    max_first: usize,
    rate: Arc<PeerRate>,
    opening: Arc<Budget>,
    /// Bytes of the first frames being read (`<protocol>_frame_bytes`).
    frame_bytes: Arc<Budget>,
    serving: Arc<Budget>,
    /// Refused streams being answered (`<protocol>_refusals`).
    refusals: Arc<Budget>,
}

/// A request being served: its place, given back when dropped.
pub(super) struct Turn(#[allow(dead_code)] Hold);

impl Inbound {
    /// The budgets of protocol `name` (`stream`, `upload`, `tool`): `per_peer`
    /// requests served for one peer and `at_once` in all.
    pub(super) fn new(
        core: &Core,
        name: Protocol,
        what: &'static str,
        max_first: usize,
        rate: Arc<PeerRate>,
        (per_peer, at_once): (usize, usize),
    ) -> Self {
        let [opening, frame_bytes, serving, refusals] = name.budgets();
        Self {
            what,
            max_first,
            rate,
            opening: Budget::new(
                opening,
                Limits::shared(OPENING_AT_ONCE, OPENING_PER_PEER),
                core.metrics.clone(),
            ),
            frame_bytes: Budget::new(
                frame_bytes,
                Limits::shared(FRAME_BYTES_AT_ONCE, FRAME_BYTES_PER_PEER),
                core.metrics.clone(),
            ),
            serving: Budget::new(
                serving,
                Limits::shared(at_once, per_peer),
                core.metrics.clone(),
            ),
            refusals: Budget::new(
                refusals,
                Limits::shared(REFUSALS_AT_ONCE, REFUSALS_PER_PEER),
                core.metrics.clone(),
            ),
        }
    }

    /// Why a peer's request found no place among those served.
    fn refusal(&self, refusal: Refusal) -> ApiError {
        match refusal {
            Refusal::Holder => over_quota(self.serving.limits().per_holder, self.what),
            Refusal::Strangers | Refusal::Node => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!("The node is serving as many {} as it can.", self.what),
            )
            .code("overloaded"),
        }
    }
}

/// The stream protocols served here.
#[derive(Clone, Copy)]
pub(super) enum Protocol {
    Stream,
    Upload,
    Tool,
}

impl Protocol {
    /// Its budgets' names: opening places, first frames' bytes, serving
    /// places, refusals being answered.
    fn budgets(self) -> [&'static str; 4] {
        match self {
            Self::Stream => [
                "stream_opening",
                "stream_frame_bytes",
                "stream_serving",
                "stream_refusals",
            ],
            Self::Upload => [
                "upload_opening",
                "upload_frame_bytes",
                "upload_serving",
                "upload_refusals",
            ],
            Self::Tool => [
                "tool_opening",
                "tool_frame_bytes",
                "tool_serving",
                "tool_refusals",
            ],
        }
    }
}

/// Whether `peer` is known to this node: trusted (`mesh.trusted`) or, in a
/// closed mesh, a member whose certificate is in force.
pub(super) fn standing(core: &Core, peer: &PeerId) -> Standing {
    let Some(mesh) = &core.mesh else {
        return Standing::Stranger;
    };
    let member = mesh.gate.as_ref().is_some_and(|gate| {
        matches!(
            gate.standing(peer, crate::member::now_ms()),
            Some(crate::member::Standing::Member(_))
        )
    });
    if member || mesh.trusted.contains(peer) {
        Standing::Known
    } else {
        Standing::Stranger
    }
}

/// Serves the streams peers open with one protocol until `cancel`, then
/// lets those being served end. `serve` gets each stream with its first
/// frame, and its place or the refusal to answer.
pub(super) async fn serve<F, Fut>(
    core: Core,
    mut incoming: libp2p_stream::IncomingStreams,
    inbound: Inbound,
    cancel: CancellationToken,
    serve: F,
) where
    F: Fn(Core, PeerId, libp2p::Stream, Vec<u8>, Result<Turn, ApiError>) -> Fut
        + Send
        + Sync
        + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let serve = Arc::new(serve);
    let inbound = Arc::new(inbound);
    let running = TaskTracker::new();
    loop {
        let (peer, mut io) = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            n = incoming.next() => match n { Some(n) => n, None => break },
        };
        let standing = standing(&core, &peer);
        let opening = if inbound.rate.allow(peer, std::time::Instant::now()) {
            inbound
                .opening
                .take(Holder::Peer(peer), standing, 1)
                .map_err(|r| inbound.refusal(r))
        } else {
            Err(inbound.rate.refusal())
        };
        let opening = match opening {
            Ok(opening) => opening,
            Err(e) => {
                let reason = e.code.unwrap_or("stream_refused");
                core.metrics.forward("stream_refused");
                core.metrics.peer_refusal(&peer, reason);
                tracing::debug!(%peer, reason, "an inbound stream refused");
                // Answered when the peer has a refusal place free and its
                // frame's bytes find room; else dropped, which resets the
                // stream (the peer tries another node either way).
                let holder = Holder::Peer(peer);
                let (Ok(place), Ok(bytes)) = (
                    inbound.refusals.take(holder, standing, 1),
                    inbound.frame_bytes.take(holder, standing, 0),
                ) else {
                    continue;
                };
                let (core, inbound, serve) = (core.clone(), inbound.clone(), serve.clone());
                running.spawn(async move {
                    let mut metered = Metered::new(&mut io, bytes);
                    let read = tokio::time::timeout(
                        REFUSAL_READ_TIMEOUT,
                        frames::read(&mut metered, inbound.max_first),
                    )
                    .await;
                    drop(metered);
                    if let Ok(Ok(Some(first))) = read {
                        (serve)(core, peer, io, first, Err(e)).await;
                    }
                    drop(place);
                });
                continue;
            }
        };
        let (core, inbound, serve) = (core.clone(), inbound.clone(), serve.clone());
        running.spawn(async move {
            let Ok(bytes) = inbound.frame_bytes.take(Holder::Peer(peer), standing, 0) else {
                return;
            };
            let Some((io, first)) = read_first(&core, peer, io, inbound.max_first, bytes).await
            else {
                return;
            };
            drop(opening);
            let turn = inbound
                .serving
                .take(Holder::Peer(peer), standing, 1)
                .map(Turn)
                .map_err(|r| {
                    let e = inbound.refusal(r);
                    let reason = e.code.unwrap_or("stream_refused");
                    core.metrics.forward("stream_refused");
                    core.metrics.peer_refusal(&peer, reason);
                    e
                });
            serve(core, peer, io, first, turn).await;
        });
    }
    running.close();
    running.wait().await;
}

/// The first frame of a stream, at the steady pace, its bytes counted in
/// `bytes` as they arrive; `None` (counted `stream_idle` when none came in
/// time, `frame_refused` when its bytes found no room) when the stream
/// brought none.
async fn read_first(
    core: &Core,
    peer: PeerId,
    mut io: libp2p::Stream,
    max: usize,
    bytes: Hold,
) -> Option<(libp2p::Stream, Vec<u8>)> {
    let mut paced = Paced::new(Metered::new(&mut io, bytes), Pace::STEADY);
    let read = frames::read(&mut paced, max).await;
    drop(paced);
    match read {
        Ok(Some(first)) => Some((io, first)),
        Ok(None) => None,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            core.metrics.forward("stream_idle");
            tracing::debug!(%peer, "no request on a stream in time; closed");
            None
        }
        Err(e) if e.kind() == std::io::ErrorKind::OutOfMemory => {
            core.metrics.forward("frame_refused");
            core.metrics.peer_refusal(&peer, "frame_refused");
            tracing::debug!(%peer, "no room for a first frame's bytes; closed");
            None
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "unreadable first frame");
            None
        }
    }
}
