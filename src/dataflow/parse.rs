//! Parsing: chunks are parsed on every worker, dealt out by sequence number.

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use super::time::Time;
use super::types::{Events, ParsedChunk, ParsedLine, owner};
use crate::config::PipelineConfig;
use crate::sink::tables::user_bucket;
use crate::source::file::Chunk;

/// Parses chunks on every worker (chunks are dealt out by sequence number).
pub(super) fn parse<'scope>(
    chunks: StreamVec<'scope, Time, Chunk>,
    config: &PipelineConfig,
) -> StreamVec<'scope, Time, ParsedChunk> {
    let config = config.clone();
    let buckets = config.buckets;
    let peers = chunks.scope().peers();
    chunks.unary(
        Exchange::new(move |c: &Chunk| parser_of(c.partition, c.seq, peers)),
        "Parse",
        move |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let validator = config.validator();
                    let mut session = output.session(&cap);
                    for chunk in data.drain(..) {
                        let mut events = Events::default();
                        let lines = chunk
                            .records()
                            .map(|record| ParsedLine {
                                start: record.start,
                                end: record.start + record.bytes.len(),
                                offset: record.offset,
                                line_number: record.line_number,
                                event: match chunk.oversize_line {
                                    Some(length) => Err(validator.too_long(length)),
                                    None => config.format.decode(&validator, record.bytes),
                                }
                                .map(|e| {
                                    events.push(
                                        user_bucket(&e.user_id, buckets),
                                        &e.user_id,
                                        &e.event_id,
                                        e.page_name.as_deref(),
                                        e.event_time_ms,
                                        config.boundaries.classify(|f| e.field(f)),
                                    )
                                })
                                .map_err(|r| r.0),
                            })
                            .collect();
                        session.give(ParsedChunk {
                            chunk,
                            lines,
                            events,
                        });
                    }
                });
            }
        },
    )
}

/// The worker that parses chunk `seq` of `partition`. The partition's owner also reads and stamps
/// it, so it parses one chunk in `2 * peers - 1` and every other worker two.
fn parser_of(partition: u32, seq: u64, peers: usize) -> u64 {
    let owner = owner(partition, peers) as u64;
    let peers = peers as u64;
    match seq % (2 * peers - 1) {
        0 => owner,
        slot => (owner + 1 + (slot - 1) / 2) % peers,
    }
}
