//! The per-call log writer: one task per stream writes its entries in
//! order, so ingest never waits on the database; bounded per stream.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::sinks::CallContext;
use super::Runtime;
use crate::store::CallStatus;

/// A per-stream bound on what the client controls, counted in
/// `callstream_stream_limit_hits_total{limit}` and logged once per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Limit {
    MarkName,
    CallLogEntries,
    CallLogQueue,
    DtmfRate,
    MessageRate,
}

impl Limit {
    pub(super) fn name(self) -> &'static str {
        match self {
            Limit::MarkName => "mark_name",
            Limit::CallLogEntries => "call_log_entries",
            Limit::CallLogQueue => "call_log_queue",
            Limit::DtmfRate => "dtmf_rate",
            Limit::MessageRate => "message_rate",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// Queue slots kept for lifecycle entries (start, failures, end), which
/// are never dropped for the sake of client-driven ones.
const LOG_RESERVE: usize = 8;

/// Call-log writes go through one task per stream, in order, so ingest never
/// waits on the database. The queue and the number of entries are bounded
/// (`stream.call_log_queue`, `stream.max_call_log_entries`).
pub(super) struct CallLog {
    tx: mpsc::Sender<LogOp>,
    task: tokio::task::JoinHandle<()>,
    metrics: Arc<crate::metrics::Metrics>,
    call_id: String,
    entries: u32,
    max_entries: u32,
    /// Limits already logged for this call ([`Limit::bit`]).
    hit: u8,
}

enum LogOp {
    Append {
        event: &'static str,
        detail: serde_json::Value,
        at: i64,
    },
    End {
        status: CallStatus,
        at: i64,
    },
}

impl CallLog {
    pub(super) fn spawn(state: &Runtime, ctx: &CallContext) -> Self {
        let cfg = &state.config.stream;
        let (tx, mut rx) = mpsc::channel::<LogOp>(cfg.call_log_queue + LOG_RESERVE);
        let store = state.store.clone();
        let (tenant, call) = (ctx.tenant_id.clone(), ctx.call_id.clone());
        let task = tokio::spawn(async move {
            while let Some(op) = rx.recv().await {
                let result = match op {
                    LogOp::Append { event, detail, at } => {
                        store
                            .append_call_log(&tenant, &call, event, &detail, at)
                            .await
                    }
                    LogOp::End { status, at } => {
                        store.end_call(&tenant, &call, status, at).await.map(|_| ())
                    }
                };
                if let Err(e) = result {
                    tracing::error!(call_id = %call, error = %e, "call log write failed");
                }
            }
        });
        Self {
            tx,
            task,
            metrics: state.metrics.clone(),
            call_id: ctx.call_id.clone(),
            entries: 0,
            max_entries: cfg.max_call_log_entries,
            hit: 0,
        }
    }

    /// Counts a bound reached; the first time per call it is also logged.
    pub(super) fn limit_hit(&mut self, limit: Limit) {
        self.metrics.limit_hit(limit.name());
        if self.hit & limit.bit() == 0 {
            self.hit |= limit.bit();
            tracing::warn!(call_id = %self.call_id, limit = limit.name(), "stream limit reached; the excess is dropped");
        }
    }

    /// Queues an entry the client caused (DTMF, marks, messages sent back);
    /// dropped, and counted, past the call's bounds.
    pub(super) fn append(&mut self, event: &'static str, detail: serde_json::Value) {
        if self.entries >= self.max_entries {
            if self.hit & Limit::CallLogEntries.bit() == 0 {
                let max = self.max_entries;
                self.append_lifecycle(
                    "call_log_truncated",
                    serde_json::json!({ "max_entries": max }),
                );
            }
            self.limit_hit(Limit::CallLogEntries);
            return;
        }
        if self.tx.capacity() <= LOG_RESERVE {
            self.limit_hit(Limit::CallLogQueue);
            return;
        }
        self.entries += 1;
        self.send(event, detail);
    }

    /// Queues a lifecycle entry: it may use the reserve and is not counted
    /// against `max_call_log_entries`.
    pub(super) fn append_lifecycle(&mut self, event: &'static str, detail: serde_json::Value) {
        self.send(event, detail);
    }

    fn send(&mut self, event: &'static str, detail: serde_json::Value) {
        let at = crate::store::now_ms();
        if self
            .tx
            .try_send(LogOp::Append { event, detail, at })
            .is_err()
        {
            self.limit_hit(Limit::CallLogQueue);
        }
    }

    /// Writes the last entry, ends the call and waits for every queued
    /// write to land (waiting for room: these are never dropped).
    pub(super) async fn finish(self, last: (&'static str, serde_json::Value), status: CallStatus) {
        let at = crate::store::now_ms();
        let (event, detail) = last;
        let _ = self.tx.send(LogOp::Append { event, detail, at }).await;
        let _ = self.tx.send(LogOp::End { status, at }).await;
        drop(self.tx);
        let _ = self.task.await;
    }
}
