//! Files and standard input, read in line-aligned chunks.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use serde::{Deserialize, Serialize};

/// A run of whole lines from one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub partition: u32,
    /// Position of the chunk in its partition: 0, 1, 2, ...
    pub seq: u64,
    /// Byte offset of the chunk's first byte in the partition.
    pub byte_offset: u64,
    /// 1-based number of the chunk's first line.
    pub first_line: u64,
    pub bytes: Vec<u8>,
    /// No chunk follows this one.
    pub last: bool,
    /// Where reading resumes after this chunk: a byte offset in a file, a record offset in Kafka.
    pub end_offset: u64,
    /// For record sources (Kafka): where each record ends in `bytes`, and its offset. Line
    /// sources (files) have `None`: their records are the lines.
    pub records: Option<RecordIndex>,
}

/// The records of a chunk from a record source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordIndex {
    pub ends: Vec<u32>,
    pub offsets: Vec<u64>,
}

/// One record of a chunk: a line of a file, or a Kafka record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Byte range of the record within the chunk.
    pub start: usize,
    pub bytes: &'a [u8],
    /// Byte offset of a line in its file, or a Kafka record's offset.
    pub offset: u64,
    /// 1-based line number in a file; 0 for Kafka records.
    pub line_number: u64,
}

impl Chunk {
    /// The 1-based number of the line after this chunk (files only).
    pub fn next_line(&self) -> u64 {
        match self.records {
            Some(_) => 0,
            None => self.first_line + line_count(&self.bytes),
        }
    }

    /// The chunk's records. Blank lines of a file are not records; every Kafka record is one.
    pub fn records(&self) -> Box<dyn Iterator<Item = Record<'_>> + '_> {
        match &self.records {
            None => Box::new(
                (self.first_line..)
                    .zip(lines(&self.bytes))
                    .filter(|(_, (_, line))| !line.iter().all(u8::is_ascii_whitespace))
                    .map(|(line_number, (start, bytes))| Record {
                        start,
                        bytes,
                        offset: self.byte_offset + start as u64,
                        line_number,
                    }),
            ),
            Some(index) => {
                let starts = std::iter::once(0).chain(index.ends.iter().map(|&e| e as usize));
                Box::new(starts.zip(&index.ends).zip(&index.offsets).map(
                    |((start, &end), &offset)| Record {
                        start,
                        bytes: &self.bytes[start..end as usize],
                        offset,
                        line_number: 0,
                    },
                ))
            }
        }
    }
}

/// Reads a file (or `-`, standard input) as a sequence of [`Chunk`]s of about `chunk_bytes` each.
/// A chunk always ends at a line end, so a line longer than `chunk_bytes` makes a larger chunk.
///
/// ```
/// use sessionize::source::ChunkReader;
/// let mut reader = ChunkReader::new(0, Box::new(&b"a\nb\nc"[..]), 2);
/// let first = reader.next_chunk().unwrap().unwrap();
/// assert_eq!((first.bytes.as_slice(), first.first_line), (&b"a\n"[..], 1));
/// let second = reader.next_chunk().unwrap().unwrap();
/// assert_eq!((second.bytes.as_slice(), second.first_line, second.byte_offset), (&b"b\n"[..], 2, 2));
/// let third = reader.next_chunk().unwrap().unwrap();
/// assert_eq!((third.bytes.as_slice(), third.last), (&b"c"[..], true));
/// assert!(reader.next_chunk().unwrap().is_none());
/// ```
pub struct ChunkReader {
    partition: u32,
    input: Box<dyn Read>,
    chunk_bytes: usize,
    /// Bytes read past the end of the previous chunk's last line.
    carry: Vec<u8>,
    seq: u64,
    byte_offset: u64,
    next_line: u64,
    done: bool,
}

impl ChunkReader {
    pub fn new(partition: u32, input: Box<dyn Read>, chunk_bytes: usize) -> Self {
        ChunkReader {
            partition,
            input,
            chunk_bytes: chunk_bytes.max(1),
            carry: Vec::new(),
            seq: 0,
            byte_offset: 0,
            next_line: 1,
            done: false,
        }
    }

    /// Opens `path`, or standard input for `-`, to read from byte `offset`, which is the start
    /// of line `line` (1-based). Standard input can only be read from its start.
    pub fn open(
        partition: u32,
        path: &str,
        chunk_bytes: usize,
        (offset, line): (u64, u64),
    ) -> io::Result<Self> {
        let input: Box<dyn Read> = if path == "-" {
            if offset > 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "standard input cannot resume at an offset: give a file, or a new warehouse",
                ));
            }
            Box::new(io::stdin())
        } else {
            let mut file = File::open(path).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot open input {path:?}: {e}"))
            })?;
            file.seek(SeekFrom::Start(offset))?;
            Box::new(file)
        };
        let mut reader = Self::new(partition, input, chunk_bytes);
        reader.byte_offset = offset;
        reader.next_line = line.max(1);
        Ok(reader)
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The last chunk has been handed out.
    pub fn done(&self) -> bool {
        self.done
    }

    /// The next chunk, or `None` after the last one.
    pub fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        if self.done {
            return Ok(None);
        }
        let mut bytes = std::mem::take(&mut self.carry);
        let mut eof = false;
        let mut cut = None;
        while cut.is_none() && !eof {
            let start = bytes.len();
            // Fill up to the chunk size; past it (a line longer than a chunk), grow by chunks.
            let want = match self.chunk_bytes.checked_sub(start) {
                Some(room) if room > 0 => room,
                _ => self.chunk_bytes,
            };
            bytes.reserve(want);
            // `read_to_end` fills spare capacity without zeroing it first.
            let read = (&mut self.input)
                .take(want as u64)
                .read_to_end(&mut bytes)?;
            eof = read < want;
            if bytes.len() >= self.chunk_bytes || eof {
                cut = memchr_last_newline(&bytes).map(|i| i + 1);
            }
        }
        // At end of input the chunk takes everything; otherwise it ends at its last line end.
        let end = if eof {
            bytes.len()
        } else {
            cut.expect("loop ends with a cut")
        };
        self.carry = bytes.split_off(end);
        let last = eof;
        let chunk = Chunk {
            partition: self.partition,
            seq: self.seq,
            byte_offset: self.byte_offset,
            first_line: self.next_line,
            last,
            end_offset: self.byte_offset + bytes.len() as u64,
            records: None,
            bytes,
        };
        self.seq += 1;
        self.byte_offset += chunk.bytes.len() as u64;
        self.next_line = chunk.next_line();
        self.done = last;
        Ok(Some(chunk))
    }
}

fn memchr_last_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().rposition(|&b| b == b'\n')
}

fn line_count(bytes: &[u8]) -> u64 {
    let newlines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
    newlines + u64::from(!bytes.is_empty() && *bytes.last().unwrap() != b'\n')
}

/// The lines of a chunk with their byte offsets within it; a trailing `\r` is dropped.
pub fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= bytes.len() {
            return None;
        }
        let end = bytes[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| start + i);
        let line_start = start;
        start = end + 1;
        let line = &bytes[line_start..end];
        Some((line_start, line.strip_suffix(b"\r").unwrap_or(line)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunks(input: &[u8], size: usize) -> Vec<Chunk> {
        let mut reader = ChunkReader::new(3, Box::new(input.to_vec().leak() as &[u8]), size);
        std::iter::from_fn(|| reader.next_chunk().unwrap()).collect()
    }

    #[test]
    fn empty_input_is_one_empty_last_chunk() {
        let all = chunks(b"", 8);
        assert_eq!(all.len(), 1);
        assert!(all[0].last && all[0].bytes.is_empty());
    }

    #[test]
    fn lines_strip_carriage_returns_and_keep_offsets() {
        let got: Vec<_> = lines(b"ab\r\n\ncd").collect();
        assert_eq!(got, vec![(0, &b"ab"[..]), (4, &b""[..]), (5, &b"cd"[..])]);
    }

    proptest! {
        #[test]
        fn chunks_reassemble_the_input_at_line_boundaries(
            lines in proptest::collection::vec("[a-z]{0,20}", 0..40),
            trailing_newline in any::<bool>(),
            size in 1usize..64,
        ) {
            let mut input = lines.join("\n").into_bytes();
            if trailing_newline && !input.is_empty() { input.push(b'\n'); }
            let all = chunks(&input, size);
            let joined: Vec<u8> = all.iter().flat_map(|c| c.bytes.clone()).collect();
            prop_assert_eq!(&joined, &input);
            prop_assert!(all.last().unwrap().last);
            let mut line = 1;
            let mut offset = 0;
            for (i, chunk) in all.iter().enumerate() {
                prop_assert_eq!(chunk.seq, i as u64);
                prop_assert_eq!(chunk.first_line, line);
                prop_assert_eq!(chunk.byte_offset, offset);
                if !chunk.last { prop_assert_eq!(chunk.bytes.last(), Some(&b'\n')); }
                line += line_count(&chunk.bytes);
                offset += chunk.bytes.len() as u64;
            }
        }
    }
}
