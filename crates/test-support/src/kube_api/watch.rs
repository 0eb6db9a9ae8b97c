//! Response bodies, including the never-ending one of a watch: newline-delimited JSON
//! events sent chunked as they come, first the initial or replayed events, then whatever
//! the store queues for this watcher, with bookmarks in between.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame};
use tokio::sync::mpsc;

use super::store::Store;

pub enum ResponseBody {
    Full(Option<Bytes>),
    /// Lines sent chunked, then the end: a watch that ends at once (410 Expired).
    Lines(VecDeque<Bytes>),
    Watch {
        initial: VecDeque<Bytes>,
        receiver: mpsc::Receiver<Bytes>,
        _guard: WatchGuard,
    },
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ResponseBody::Full(Some(bytes.into()))
    }
}

/// Unregisters the watcher when its response body goes (the client hung up, or the server
/// stopped), so the store stops queueing for nobody.
pub struct WatchGuard {
    pub store: Arc<Store>,
    pub id: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.store.stop_watch(self.id);
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ResponseBody::Full(bytes) => {
                Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes))))
            }
            ResponseBody::Lines(lines) => {
                Poll::Ready(lines.pop_front().map(|line| Ok(Frame::data(line))))
            }
            ResponseBody::Watch {
                initial, receiver, ..
            } => {
                if let Some(line) = initial.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(line))));
                }
                receiver
                    .poll_recv(context)
                    .map(|line| line.map(|line| Ok(Frame::data(line))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ResponseBody::Full(None))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            ResponseBody::Full(Some(bytes)) => {
                hyper::body::SizeHint::with_exact(bytes.len() as u64)
            }
            ResponseBody::Full(None) => hyper::body::SizeHint::with_exact(0),
            ResponseBody::Lines(_) | ResponseBody::Watch { .. } => hyper::body::SizeHint::default(),
        }
    }
}

/// Keeps one watch going: a bookmark every `interval` when asked for, and the end of the
/// stream at its timeout (`timeoutSeconds`, else kube-apiserver's 30 minutes). Ends by
/// itself once the watcher is gone.
pub async fn keep_watch(
    store: Arc<Store>,
    id: u64,
    bookmarks: Option<Duration>,
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    let tick = bookmarks.unwrap_or(Duration::from_millis(200));
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            store.stop_watch(id);
            return;
        }
        tokio::time::sleep(tick.min(deadline - now)).await;
        if tokio::time::Instant::now() >= deadline {
            store.stop_watch(id);
            return;
        }
        let alive = match bookmarks {
            Some(_) => store.bookmark(id),
            None => store.is_watching(id),
        };
        if !alive {
            return;
        }
    }
}
