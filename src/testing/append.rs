//! Appends held in the writer's queue, for tests that line batches up
//! behind a held fsync ([`crate::testing::faultfs::FaultFs::hold_next`]) so
//! they form one group commit deterministically: of the log
//! ([`queue_append`]) or through the service ([`queue_service_append`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use std::sync::Arc;

use crate::log::{Appended, Log, LogError};
use crate::record::Record;
use crate::service::{Service, ServiceError};

/// An append that has reached the writer's queue and not been answered.
pub type QueuedAppend = Pin<Box<dyn Future<Output = Result<Vec<Appended>, LogError>> + Send>>;

/// Starts an append and lets it reach the writer's queue (its first poll
/// sends the batch), without waiting for the answer. Panics if it was
/// answered at once: the caller holds the writer.
pub fn queue_append(log: &Log, batch: Vec<Vec<u8>>) -> QueuedAppend {
    let log = log.clone();
    let mut fut: QueuedAppend = Box::pin(async move { log.append(batch).await });
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        matches!(fut.as_mut().poll(&mut cx), Poll::Pending),
        "the append was answered at once: the writer was not held"
    );
    fut
}

/// A [`Service::append`] that has reached the writer's queue and not been
/// answered.
pub type QueuedServiceAppend =
    Pin<Box<dyn Future<Output = Result<Vec<Appended>, ServiceError>> + Send>>;

/// Starts `service.append(records)` and lets it reach the writer's queue
/// (its first poll sends the batch), without waiting for the answer: spawn
/// or await it. Panics if it was answered at once: the caller holds the
/// writer.
pub fn queue_service_append(service: &Arc<Service>, records: Vec<Record>) -> QueuedServiceAppend {
    let service = service.clone();
    let mut fut: QueuedServiceAppend = Box::pin(async move { service.append(records).await });
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        matches!(fut.as_mut().poll(&mut cx), Poll::Pending),
        "the append was answered at once: the writer was not held"
    );
    fut
}

/// Waits for a queued append's answer, outside any async runtime.
pub fn answer(fut: QueuedAppend) -> Result<Vec<Appended>, LogError> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(fut)
}
