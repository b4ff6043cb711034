//! Manifest PUTs on PostgreSQL, batched: the PUTs that arrive while a
//! replica's previous batch is in the database go together in the next one,
//! one statement and one commit for all (`berth_put_manifests`, migrations
//! 0007 and 0008). A PUT checks everything that can refuse it before it
//! writes, so a refused one writes nothing and is answered alone; a batch that
//! fails with an error (nothing of it stored) runs again one PUT at a time, so
//! one PUT that makes the database fail fails alone. The write lock serialises
//! every write of every replica, so a PUT alone pays a round trip, the lock
//! and a WAL flush by itself; under load a batch shares them, as a group
//! commit would. A PUT alone goes at once, in a batch of one.
//!
//! Each caller gets its own PUT's outcome, after the batch committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::{MetadataError, Result, db};

/// At most this many PUTs in one batch ...
const MAX_PUTS: usize = 64;
/// ... and at most about this many bytes of payload (a manifest is at most
/// 4 MiB; one larger goes alone).
const MAX_BYTES: usize = 4 << 20;

/// How one PUT of a batch ended: stored, or refused or failed alone (its
/// SQLSTATE and message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    Stored,
    Refused { code: String, message: String },
}

struct Job {
    put: Value,
    bytes: usize,
    reply: oneshot::Sender<Result<Outcome>>,
}

/// The sending side; the batching task ends when the last clone is dropped.
#[derive(Clone)]
pub(super) struct PutBatcher {
    jobs: mpsc::Sender<Job>,
    /// Batches run so far (read by the tests; a metric once the registry
    /// exports them).
    #[cfg_attr(not(test), allow(dead_code))]
    batches: Arc<AtomicU64>,
}

impl PutBatcher {
    /// Starts the task that runs batches with `call` (one bind: the batch
    /// as JSON text; returns the outcomes as JSON text) on `pool`.
    pub(super) fn start(pool: db::Pool, call: &'static str) -> PutBatcher {
        let (jobs, mut queue) = mpsc::channel::<Job>(1024);
        let batches = Arc::new(AtomicU64::new(0));
        let counted = batches.clone();
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let mut bytes = first.bytes;
                let mut batch = vec![first];
                while batch.len() < MAX_PUTS && bytes < MAX_BYTES {
                    match queue.try_recv() {
                        Ok(job) => {
                            bytes += job.bytes;
                            batch.push(job);
                        }
                        Err(_) => break,
                    }
                }
                counted.fetch_add(1, Ordering::Relaxed);
                run(&pool, call, batch).await;
            }
        });
        PutBatcher { jobs, batches }
    }

    /// How many batches ran so far.
    #[cfg(test)]
    pub(super) fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Queues `put` (the function's arguments by name, `payload_bytes` the
    /// size of its payload) and waits for its outcome.
    pub(super) async fn put(&self, put: Value, payload_bytes: usize) -> Result<Outcome> {
        let (reply, outcome) = oneshot::channel();
        let job = Job {
            put,
            bytes: payload_bytes,
            reply,
        };
        let gone = || MetadataError::Database(sqlx::Error::PoolClosed);
        self.jobs.send(job).await.map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?
    }
}

async fn run(pool: &db::Pool, call: &'static str, batch: Vec<Job>) {
    let (puts, replies): (Vec<Value>, Vec<_>) =
        batch.into_iter().map(|job| (job.put, job.reply)).unzip();
    match call_batch(pool, call, &puts).await {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        // Nothing of the batch was stored. With the database unreachable
        // every PUT fails alike; otherwise one PUT of it may be what failed:
        // each runs again alone, and gets its own answer.
        Err(error @ MetadataError::Database(_)) if puts.len() > 1 && !error.is_unavailable() => {
            tracing::debug!(puts = puts.len(), %error, "a manifest batch failed; its PUTs run one by one");
            for (put, reply) in puts.into_iter().zip(replies) {
                let outcome = call_batch(pool, call, std::slice::from_ref(&put))
                    .await
                    .map(|mut outcomes| outcomes.remove(0));
                let _ = reply.send(outcome);
            }
        }
        Err(error) => {
            // The first gets the error itself; a sqlx error cannot be cloned.
            let like = |e: &MetadataError| {
                let text = e.to_string();
                MetadataError::Database(if e.is_unavailable() {
                    sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::NotConnected, text))
                } else {
                    sqlx::Error::Protocol(text)
                })
            };
            let mut replies = replies.into_iter();
            let first = replies.next();
            for reply in replies {
                let _ = reply.send(Err(like(&error)));
            }
            if let Some(first) = first {
                let _ = first.send(Err(error));
            }
        }
    }
}

/// One call of the batch function: an outcome per PUT, in order, or the
/// error that stored nothing.
async fn call_batch(pool: &db::Pool, call: &'static str, puts: &[Value]) -> Result<Vec<Outcome>> {
    let text: String = sqlx::query_scalar(call)
        .bind(Value::from(puts).to_string())
        .fetch_one(pool)
        .await
        .map_err(MetadataError::Database)?;
    parse_outcomes(&text, puts.len()).map_err(MetadataError::Corrupt)
}

/// The outcomes `berth_put_manifests` returned, one per PUT, in order.
fn parse_outcomes(text: &str, n: usize) -> std::result::Result<Vec<Outcome>, String> {
    let values: Vec<Value> =
        serde_json::from_str(text).map_err(|e| format!("outcomes of a manifest batch: {e}"))?;
    if values.len() != n {
        return Err(format!(
            "a manifest batch of {n} answered {} outcomes",
            values.len()
        ));
    }
    Ok(values
        .into_iter()
        .map(|v| match (v.get("code"), v.get("message")) {
            (Some(code), message) => Outcome::Refused {
                code: code.as_str().unwrap_or_default().to_string(),
                message: message
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            },
            (None, _) => Outcome::Stored,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_read_in_order_and_counted() {
        let text = r#"[{}, {"code": "BR001", "message": "sha256:aa"}, {}]"#;
        assert_eq!(
            parse_outcomes(text, 3).unwrap(),
            vec![
                Outcome::Stored,
                Outcome::Refused {
                    code: "BR001".into(),
                    message: "sha256:aa".into()
                },
                Outcome::Stored
            ]
        );
        assert!(parse_outcomes(text, 2).is_err());
        assert!(parse_outcomes("not json", 1).is_err());
    }
}
