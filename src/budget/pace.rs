//! The pace a holder keeps ([`Pace`], checked by [`Paced`] readers) and
//! bytes counted against a budget as they arrive ([`Metered`]): the
//! progress half of the rule in [`super`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::Hold;

/// How fast a holder must make progress to keep what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pace {
    /// Longest wait for the first frame (or byte).
    pub first: Duration,
    /// After it, every `window` must bring `min_bytes` (or the end).
    pub window: Duration,
    pub min_bytes: usize,
}

impl Pace {
    /// Bodies, frames and uploads: the first bytes within 10 s, then 16 KiB in
    /// every 10 s (a 1.6 KB/s link keeps up; a trickle of a byte every few
    /// seconds holds nothing past its first window).
    pub const STEADY: Pace = Pace {
        first: Duration::from_secs(10),
        window: Duration::from_secs(10),
        min_bytes: 16 * 1024,
    };

    /// A progress clock started now.
    pub fn start(self) -> Progress {
        Progress {
            pace: self,
            started: false,
            deadline: Instant::now() + self.first,
            got: 0,
        }
    }
}

/// A holder's progress against its [`Pace`].
#[derive(Debug)]
pub struct Progress {
    pace: Pace,
    started: bool,
    deadline: Instant,
    got: usize,
}

impl Progress {
    /// When the holder is cut off unless more arrives.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Counts `n` bytes that arrived now.
    pub fn arrived(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let now = Instant::now();
        if !self.started {
            self.started = true;
            self.deadline = now + self.pace.window;
            self.got = 0;
            return;
        }
        self.got += n;
        if self.got >= self.pace.min_bytes {
            self.deadline = now + self.pace.window;
            self.got = 0;
        }
    }
}

/// A reader held to a [`Pace`]: reading past its deadline fails with
/// `TimedOut`, so whatever waits on it (a frame, a body) gives up what it
/// holds. For libp2p streams and other `futures` readers.
pub struct Paced<R> {
    inner: R,
    progress: Progress,
    timer: Pin<Box<Sleep>>,
}

impl<R> Paced<R> {
    pub fn new(inner: R, pace: Pace) -> Self {
        let progress = pace.start();
        let timer = Box::pin(tokio::time::sleep_until(progress.deadline()));
        Self {
            inner,
            progress,
            timer,
        }
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: futures::AsyncRead + Unpin> futures::AsyncRead for Paced<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Poll::Ready(n) = Pin::new(&mut this.inner).poll_read(cx, buf) {
            let n = n?;
            this.progress.arrived(n);
            this.timer.as_mut().reset(this.progress.deadline());
            return Poll::Ready(Ok(n));
        }
        ready!(this.timer.as_mut().poll(cx));
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the peer fell behind the pace a holder must keep",
        )))
    }
}

impl<W: futures::AsyncWrite + Unpin> futures::AsyncWrite for Paced<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

/// A reader whose bytes are counted against a [`Hold`] as they arrive:
/// reading fails (`OutOfMemory`) once the budget has no room for them, so a
/// frame announced large holds only what came, and never more than its
/// holder's share.
pub struct Metered<R> {
    inner: R,
    hold: Hold,
}

impl<R> Metered<R> {
    pub fn new(inner: R, hold: Hold) -> Self {
        Self { inner, hold }
    }
}

impl<R: futures::AsyncRead + Unpin> futures::AsyncRead for Metered<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Err(refusal) = this.hold.grow(n) {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("no room for more bytes ({})", refusal.as_str()),
            )));
        }
        Poll::Ready(Ok(n))
    }
}

#[cfg(test)]
mod tests {
    use libp2p::PeerId;

    use super::super::tests::budget;
    use super::super::{Holder, Limits, Standing};
    use super::*;

    #[tokio::test]
    async fn a_trickle_is_cut_after_one_window_and_a_steady_flow_is_not() {
        use futures::AsyncReadExt;
        // A byte every 100 ms: the first arrives in time, the window after
        // it brings 3 bytes, not 100.
        let pace = Pace {
            first: Duration::from_millis(300),
            window: Duration::from_millis(300),
            min_bytes: 100,
        };
        let mut paced = Paced::new(flow(20, 1, Duration::from_millis(100)), pace);
        let mut buf = [0u8; 16];
        let err = loop {
            match paced.read(&mut buf).await {
                Ok(0) => panic!("the trickle was kept to its end"),
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);

        // 200 bytes every 50 ms against 100 every 2 s: kept to the end.
        let pace = Pace {
            first: Duration::from_secs(2),
            window: Duration::from_secs(2),
            min_bytes: 100,
        };
        let mut paced = Paced::new(flow(10, 200, Duration::from_millis(50)), pace);
        let mut all = Vec::new();
        paced
            .read_to_end(&mut all)
            .await
            .expect("a steady flow is kept");
        assert_eq!(all.len(), 2000);
    }

    #[tokio::test]
    async fn a_metered_reader_holds_what_came_and_stops_at_its_share() {
        use futures::AsyncReadExt;
        let b = budget(Limits::shared(1000, 300));
        let peer = Holder::Peer(PeerId::random());
        let hold = b.take(peer, Standing::Stranger, 0).expect("nothing yet");
        let mut metered = Metered::new(flow(10, 50, Duration::from_millis(1)), hold);
        let mut got = Vec::new();
        let err = metered
            .read_to_end(&mut got)
            .await
            .expect_err("past its share");
        assert_eq!(err.kind(), std::io::ErrorKind::OutOfMemory);
        assert_eq!(got.len(), 300, "what came within its share");
        assert_eq!(b.held(Some(&peer)), 300);
        drop(metered);
        assert_eq!(b.held(None), 0, "given back with the reader");
    }

    /// A reader that gets `times` chunks of `size` bytes, one every `every`.
    fn flow(times: usize, size: usize, every: Duration) -> impl futures::AsyncRead + Unpin {
        use futures::TryStreamExt;
        let chunks = futures::stream::unfold(0, move |i| async move {
            if i == times {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((Ok::<_, std::io::Error>(vec![1u8; size]), i + 1))
        });
        Box::pin(chunks).into_async_read()
    }
}
