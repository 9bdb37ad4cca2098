//! [`ConsumerQueue`]: records taken from librdkafka's consumer queue a batch at a time.
//!
//! `BaseConsumer::poll` hands out one record a call, and each call reads the clock (twice: once
//! in rdkafka, once in librdkafka), wraps the record in an event and allocates a reference count
//! for it: 13% of the workers' CPU in a Kafka run (`perf`, docs/PERFORMANCE.md). librdkafka's
//! `rd_kafka_consume_batch_queue` takes up to a batch of records in one call; the rdkafka crate
//! does not offer it, so this module calls it through the crate's bindings.
//!
//! Partition errors (an offset out of range, a partition's end) come back as records with an error
//! code, as they do from `poll`. Client-wide errors (every broker down) are not records: librdkafka
//! logs them and retries on its own.
//!
//! [`cached_high_watermark`] is another call the crate does not offer: the end of a partition as
//! the broker's latest fetch response gave it, without asking the broker.

use std::ffi::CStr;
use std::ptr::NonNull;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// The queue a consumer with a group id receives its records on.
///
/// Holds a reference to the queue, not to the consumer: it must be dropped before the consumer,
/// and every [`Batch`] before it.
pub(super) struct ConsumerQueue {
    queue: NonNull<rd::rd_kafka_queue_t>,
}

impl ConsumerQueue {
    /// `None` for a consumer without a group id, which has no consumer queue.
    pub fn of(consumer: &BaseConsumer) -> Option<Self> {
        // SAFETY: the client pointer is valid while `consumer` lives; the queue returned holds a
        // reference of its own, given back in `drop`.
        let queue = unsafe { rd::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        NonNull::new(queue).map(|queue| ConsumerQueue { queue })
    }

    /// Takes up to `max` records already waiting, without waiting for more.
    pub fn take(&self, max: usize) -> Batch {
        let mut messages = Vec::with_capacity(max);
        // SAFETY: librdkafka writes at most `max` message pointers into the vector's capacity and
        // returns how many (or -1 on error, which leaves it empty); each is ours to destroy.
        let taken = unsafe {
            rd::rd_kafka_consume_batch_queue(self.queue.as_ptr(), 0, messages.as_mut_ptr(), max)
        };
        if let Ok(taken @ 1..) = usize::try_from(taken) {
            // SAFETY: the first `taken` elements were written above.
            unsafe { messages.set_len(taken.min(max)) };
        }
        Batch { messages }
    }
}

impl Drop for ConsumerQueue {
    fn drop(&mut self) {
        // SAFETY: gives back the reference `of` took.
        unsafe { rd::rd_kafka_queue_destroy(self.queue.as_ptr()) }
    }
}

/// Records taken by [`ConsumerQueue::take`]; librdkafka's copies are freed when it is dropped.
pub(super) struct Batch {
    messages: Vec<*mut rd::rd_kafka_message_t>,
}

/// One record of a [`Batch`].
pub(super) enum Record<'a> {
    Message {
        partition: u32,
        offset: u64,
        payload: &'a [u8],
    },
    /// The partition has nothing past `offset`, the offset its next record will have.
    ///
    /// A batch moves librdkafka's position of the partition one past this offset, as if it had
    /// been a record (`rd_kafka_q_serve_rkmessages` treats error records as records), so the
    /// position after a batch must not be taken for the partition's end.
    End { partition: u32, offset: u64 },
    /// Any other error, as `poll` would have returned it.
    Error(KafkaError),
}

impl Batch {
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn records(&self) -> impl Iterator<Item = Record<'_>> {
        self.messages.iter().map(|&message| {
            // SAFETY: a message stays valid until the batch destroys it in `drop`.
            let message = unsafe { &*message };
            if message.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return match message.err.into() {
                    RDKafkaErrorCode::PartitionEOF => Record::End {
                        partition: message.partition as u32,
                        offset: message.offset as u64,
                    },
                    code => Record::Error(KafkaError::MessageConsumption(code)),
                };
            }
            let payload = match NonNull::new(message.payload.cast::<u8>()) {
                // SAFETY: librdkafka's payload is `len` bytes, valid as long as the message.
                Some(bytes) => unsafe { std::slice::from_raw_parts(bytes.as_ptr(), message.len) },
                None => &[],
            };
            Record::Message {
                partition: message.partition as u32,
                offset: message.offset as u64,
                payload,
            }
        })
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        for &message in &self.messages {
            // SAFETY: each message was handed to us by `take`, and is destroyed once.
            unsafe { rd::rd_kafka_message_destroy(message) }
        }
    }
}

/// The partition's high watermark (the offset its next record will have) as of the broker's
/// latest fetch response, without a request; `None` before the first response.
pub(super) fn cached_high_watermark(
    consumer: &BaseConsumer,
    topic: &CStr,
    partition: u32,
) -> Option<u64> {
    let (mut low, mut high) = (-1, -1);
    // SAFETY: the client pointer is valid while `consumer` lives, `topic` is NUL-terminated, and
    // librdkafka writes only the two offsets.
    let error = unsafe {
        rd::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            i32::try_from(partition).ok()?,
            &mut low,
            &mut high,
        )
    };
    if error != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return None;
    }
    u64::try_from(high).ok()
}
