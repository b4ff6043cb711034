//! Lingering request bodies. When berth answers a request before reading
//! all of its body (an upload refused for its size or for a full disk, an
//! unknown upload session, a manifest that does not parse), the client may
//! still be writing. If the connection then closed with its unread bytes,
//! the kernel would reset it, and the client would see "broken pipe" or
//! "connection reset" instead of the answer: docker prints the first and
//! retries, and the reason is lost. So an unfinished body is not dropped:
//! a task reads and discards the rest, at most [`LINGER_BYTES`] bytes for at
//! most [`LINGER_TIME`] while the client keeps sending, which lets the client finish its write and read
//! the error. Beyond either bound the connection closes as before. (Go's
//! net/http, which distribution uses, closes its write side and waits for
//! the same reason; nginx calls it a lingering close.)

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, BodyDataStream};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body::Body as _;

/// At most this much of an unread body is read and discarded.
pub const LINGER_BYTES: u64 = 256 << 20;
/// For at most this long.
pub const LINGER_TIME: Duration = Duration::from_secs(10);
/// And only while the client keeps sending: a body that was cut for being
/// idle is not waited for again.
pub const LINGER_IDLE: Duration = Duration::from_secs(2);

/// `body`, discarded to its end (within the bounds above) in the
/// background if it is dropped before its end. An empty body is returned as
/// it is, at no cost.
pub fn lingering(body: Body) -> Body {
    if body.is_end_stream() {
        return body;
    }
    Body::from_stream(Lingering {
        frames: Some(body.into_data_stream()),
        ended: false,
    })
}

struct Lingering {
    frames: Option<BodyDataStream>,
    /// The body ended or failed: nothing is left to read.
    ended: bool,
}

impl Stream for Lingering {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(frames) = self.frames.as_mut() else {
            return Poll::Ready(None);
        };
        let next = ready!(frames.poll_next_unpin(cx));
        if !matches!(next, Some(Ok(_))) {
            self.ended = true;
        }
        Poll::Ready(next)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let (Some(frames), Ok(runtime)) =
            (self.frames.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(discard(frames, LINGER_BYTES, LINGER_TIME, LINGER_IDLE));
    }
}

/// Reads and drops `frames` until they end, fail, pass `bytes` or `time`,
/// or send nothing for `idle`; returns how many bytes it read.
async fn discard(mut frames: BodyDataStream, bytes: u64, time: Duration, idle: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + time;
    let mut read = 0u64;
    while read < bytes {
        let until = deadline.min(tokio::time::Instant::now() + idle);
        match tokio::time::timeout_at(until, frames.next()).await {
            Ok(Some(Ok(data))) => read += data.len() as u64,
            _ => break,
        }
    }
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streaming(chunks: usize) -> (Body, tokio::sync::mpsc::Sender<Bytes>) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(chunks.max(1));
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            let chunk = rx.recv().await?;
            Some((Ok::<_, std::io::Error>(chunk), rx))
        });
        (Body::from_stream(stream), tx)
    }

    #[tokio::test]
    async fn a_dropped_body_is_read_to_its_end_in_the_background() {
        let (body, tx) = streaming(4);
        let body = lingering(body);
        drop(body);
        // The discarding task keeps reading: every send finds a reader.
        for _ in 0..32 {
            tx.send(Bytes::from_static(&[1; 1024])).await.expect("read");
        }
        drop(tx);
    }

    #[tokio::test]
    async fn discarding_stops_at_its_byte_and_time_bounds() {
        let (body, tx) = streaming(64);
        for _ in 0..64 {
            tx.send(Bytes::from_static(&[1; 1024])).await.unwrap();
        }
        let read = discard(body.into_data_stream(), 10 * 1024, LINGER_TIME, LINGER_IDLE).await;
        assert_eq!(read, 10 * 1024);

        // A client that keeps sending past the time bound.
        let (body, tx) = streaming(1);
        let feeder = tokio::spawn(async move {
            while tx.send(Bytes::from_static(&[1; 16])).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let t0 = std::time::Instant::now();
        let ms = Duration::from_millis;
        let read = discard(body.into_data_stream(), 1 << 20, ms(300), ms(200)).await;
        assert!(read > 0);
        assert!(t0.elapsed() >= ms(300));
        feeder.await.unwrap();

        // A client that sends nothing: given up after the idle bound.
        let (body, _tx) = streaming(1);
        let t0 = std::time::Instant::now();
        let read = discard(body.into_data_stream(), 1 << 20, LINGER_TIME, ms(200)).await;
        assert_eq!(read, 0);
        let waited = t0.elapsed();
        assert!(waited >= ms(200) && waited < LINGER_TIME, "{waited:?}");
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_is_not_drained_again() {
        let body = lingering(Body::from(vec![1u8; 10]));
        let mut frames = body.into_data_stream();
        let mut n = 0;
        while let Some(Ok(data)) = frames.next().await {
            n += data.len();
        }
        assert_eq!(n, 10);
        // An empty body is passed through untouched.
        assert!(lingering(Body::empty()).is_end_stream());
    }
}
