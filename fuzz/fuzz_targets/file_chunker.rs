//! Fuzzes the line-aligned file reader, `sessionize::source::ChunkReader`.
//!
//! The first input byte chooses the chunk size (1..=256), the second the line limit
//! (1..=256); the rest is the file. Reading it chunk by chunk until `Ok(None)` must never
//! panic nor fail, and the chunks must satisfy:
//!
//! - `seq` counts 0, 1, 2, ...;
//! - the first chunk starts at byte 0 and each next one at the previous chunk's `end_offset`;
//! - the last chunk's `end_offset` is the input's length;
//! - exactly the final chunk has `last == true`;
//! - a chunk with `oversize_line == Some(n)` holds the line's first `max_line` bytes, and
//!   `n > max_line`;
//! - no more chunks than input bytes plus one (each chunk but the last consumes at least a
//!   byte), so that a reader that stops advancing fails here instead of hanging.
//!
//! Run it from the `fuzz/` directory with a nightly toolchain:
//!
//! ```text
//! cargo +nightly fuzz run file_chunker -- -max_total_time=60
//! ```
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessionize::source::ChunkReader;

fuzz_target!(|data: &[u8]| {
    let [size, max_line, rest @ ..] = data else {
        return;
    };
    let chunk_size = usize::from(*size) + 1;
    let max_line = usize::from(*max_line) + 1;
    let mut reader = ChunkReader::new(0, Box::new(std::io::Cursor::new(rest.to_vec())), chunk_size)
        .with_max_line_bytes(max_line);

    let mut expected_seq = 0u64;
    let mut expected_offset = 0u64;
    let mut saw_last = false;
    while let Some(chunk) = reader
        .next_chunk()
        .expect("reading from memory cannot fail")
    {
        assert!(
            !saw_last,
            "chunk {} follows a chunk marked last (chunk size {chunk_size}, line limit {max_line})",
            chunk.seq
        );
        assert_eq!(chunk.seq, expected_seq, "seq does not count 0, 1, 2, ...");
        assert_eq!(
            chunk.byte_offset, expected_offset,
            "chunk {} does not start where the previous one ended",
            chunk.seq
        );
        assert!(
            chunk.end_offset >= chunk.byte_offset,
            "chunk {} ends ({}) before it starts ({})",
            chunk.seq,
            chunk.end_offset,
            chunk.byte_offset
        );
        if let Some(length) = chunk.oversize_line {
            assert_eq!(
                chunk.bytes.len(),
                max_line,
                "oversize chunk {} does not hold exactly the line limit",
                chunk.seq
            );
            assert!(
                length > max_line as u64,
                "chunk {} is marked oversize ({length} bytes) within the line limit {max_line}",
                chunk.seq
            );
        }
        assert!(
            chunk.seq <= rest.len() as u64,
            "more chunks than input bytes: the reader does not advance"
        );
        expected_seq += 1;
        expected_offset = chunk.end_offset;
        saw_last = chunk.last;
    }
    assert!(saw_last, "no chunk was marked last");
    assert_eq!(
        expected_offset,
        rest.len() as u64,
        "the last chunk's end_offset is not the input's length"
    );
    assert!(reader.done());
    assert!(
        matches!(reader.next_chunk(), Ok(None)),
        "a chunk after the end"
    );
});
