//! Delivery of placed audio to consumers (recording, transcription) over
//! bounded channels, without ever making ingest wait on a slow consumer.
//!
//! [`SpillingSender`] never drops. When the channel is full the chunk goes
//! to an in-memory backlog, delivered in order as room frees up and awaited
//! at the end of the stream. The backlog is capped (default one minute of
//! 20 ms chunks); past the cap the sink is declared failed, which the
//! caller must surface (the recording is then incomplete; a live
//! transcription gives up its slot and the call is transcribed from its
//! recording afterwards), rather than letting memory grow without bound.
//! Nothing sheds audio a little at a time: under overload one call changes
//! course cleanly instead of every call getting holes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{PcmChunk, WidebandChunk};

/// What a transcription sink receives: the 8 kHz audio (for voice activity
/// detection, which runs before upsampling) and the 16 kHz audio Whisper
/// hears, each placed by sample position.
#[derive(Debug, Clone)]
pub enum TranscriptionInput {
    Narrowband(PcmChunk),
    Wideband(WidebandChunk),
}

/// Why a sink stopped taking audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    #[error("sink backlog exceeded its cap")]
    Overflow,
    #[error("sink consumer has gone away")]
    Closed,
}

/// Lossless, non-blocking sender with an in-memory spill (see module docs).
#[derive(Debug)]
pub struct SpillingSender<T> {
    tx: mpsc::Sender<T>,
    backlog: VecDeque<T>,
    max_backlog: usize,
    failed: Option<SinkError>,
    failure_flag: Option<Arc<AtomicBool>>,
}

impl<T> SpillingSender<T> {
    /// Default backlog cap: one minute of 20 ms chunks.
    pub const DEFAULT_MAX_BACKLOG: usize = 3_000;

    pub fn new(tx: mpsc::Sender<T>, max_backlog: usize) -> Self {
        Self {
            tx,
            backlog: VecDeque::new(),
            max_backlog,
            failed: None,
            failure_flag: None,
        }
    }

    /// Also raises `flag` when this sender fails. A consumer sees its
    /// channel close the same way whether the stream ended or the sender gave
    /// up; the flag tells it the audio it got is incomplete.
    pub fn with_failure_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.failure_flag = Some(flag);
        self
    }

    fn fail(&mut self, err: SinkError) {
        if self.failed.is_none() {
            self.failed = Some(err);
            if let Some(flag) = &self.failure_flag {
                flag.store(true, Ordering::Release);
            }
        }
    }

    /// Queues `item` without waiting. After the first error every later call
    /// returns it too: a recording with a hole must not pretend otherwise.
    pub fn send(&mut self, item: T) -> Result<(), SinkError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        self.drain();
        if self.failed.is_none() && self.backlog.is_empty() {
            match self.tx.try_send(item) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(item)) => self.backlog.push_back(item),
                Err(mpsc::error::TrySendError::Closed(_)) => self.fail(SinkError::Closed),
            }
        } else if self.failed.is_none() {
            self.backlog.push_back(item);
        }
        if self.failed.is_none() && self.backlog.len() > self.max_backlog {
            self.fail(SinkError::Overflow);
        }
        self.failed.map_or(Ok(()), Err)
    }

    /// Moves backlog into the channel while it has room, oldest first.
    fn drain(&mut self) {
        while let Some(item) = self.backlog.pop_front() {
            match self.tx.try_send(item) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(item)) => {
                    self.backlog.push_front(item);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.fail(SinkError::Closed);
                    self.backlog.clear();
                    return;
                }
            }
        }
    }

    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// Delivers the rest of the backlog, waiting for the consumer, then closes
    /// the channel. Call once the stream has ended.
    pub async fn close(mut self) -> Result<(), SinkError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        while let Some(item) = self.backlog.pop_front() {
            self.tx.send(item).await.map_err(|_| SinkError::Closed)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spilling_keeps_order_and_loses_nothing() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut s = SpillingSender::new(tx, 100);
        for i in 0..10 {
            s.send(i).unwrap();
        }
        assert_eq!(s.backlog_len(), 8);
        assert_eq!(rx.recv().await, Some(0));
        s.send(10).unwrap();
        let consumer = tokio::spawn(async move {
            let mut got = vec![0];
            while let Some(i) = rx.recv().await {
                got.push(i);
            }
            got
        });
        s.close().await.unwrap();
        assert_eq!(consumer.await.unwrap(), (0..=10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn spilling_overflow_is_reported_and_sticky() {
        let (tx, _rx) = mpsc::channel(1);
        let mut s = SpillingSender::new(tx, 2);
        assert!(s.send(0).is_ok());
        assert!(s.send(1).is_ok());
        assert!(s.send(2).is_ok());
        assert_eq!(s.send(3), Err(SinkError::Overflow));
        assert_eq!(s.send(4), Err(SinkError::Overflow));
    }

    #[tokio::test]
    async fn failure_raises_the_flag() {
        let flag = Arc::new(AtomicBool::new(false));
        let (tx, _rx) = mpsc::channel(1);
        let mut s = SpillingSender::new(tx, 1).with_failure_flag(flag.clone());
        s.send(0).unwrap();
        s.send(1).unwrap();
        assert!(!flag.load(Ordering::Acquire));
        assert!(s.send(2).is_err());
        assert!(flag.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn spilling_reports_a_vanished_consumer() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let mut s = SpillingSender::new(tx, 2);
        assert_eq!(s.send(0), Err(SinkError::Closed));
    }
}
