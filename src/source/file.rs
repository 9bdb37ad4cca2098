//! Files and standard input, read in line-aligned chunks.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use serde::{Deserialize, Serialize};

/// What identifies an input file across runs, whatever path names it: a hash of its first bytes
/// (at most [`FINGERPRINT_BYTES`], as many as it had when first read). Lines appended later keep
/// the fingerprint; another file under the same name does not.
///
/// ```
/// use sessionize::source::file::Fingerprint;
/// let first = Fingerprint::of_head(b"line 1\n");
/// assert!(first.matches(b"line 1\nline 2 appended since\n"));
/// assert!(!first.matches(b"other file\n"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub bytes: u32,
    pub hash: u64,
}

/// How much of a file's head its [`Fingerprint`] covers.
pub const FINGERPRINT_BYTES: usize = 4096;

impl Fingerprint {
    /// The fingerprint of a file whose first bytes are `head`.
    pub fn of_head(head: &[u8]) -> Self {
        let head = &head[..head.len().min(FINGERPRINT_BYTES)];
        Fingerprint {
            bytes: head.len() as u32,
            hash: xxhash_rust::xxh3::xxh3_64(head),
        }
    }

    /// Whether a file whose first bytes are `head` is the file this fingerprint was taken of.
    pub fn matches(&self, head: &[u8]) -> bool {
        head.len() >= self.bytes as usize
            && xxhash_rust::xxh3::xxh3_64(&head[..self.bytes as usize]) == self.hash
    }

    /// The first [`FINGERPRINT_BYTES`] of the file at `path`.
    pub fn read_head(path: &str) -> io::Result<Vec<u8>> {
        let mut head = Vec::with_capacity(FINGERPRINT_BYTES);
        File::open(path)
            .and_then(|f| f.take(FINGERPRINT_BYTES as u64).read_to_end(&mut head))
            .map_err(|e| io::Error::new(e.kind(), format!("cannot read input {path:?}: {e}")))?;
        Ok(head)
    }
}

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
    /// As one byte string, not a sequence of numbers: chunks cross processes in a cluster.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    /// No chunk follows this one.
    pub last: bool,
    /// Where reading resumes after this chunk: a byte offset in a file, a record offset in Kafka.
    pub end_offset: u64,
    /// For record sources (Kafka): where each record ends in `bytes`, and its offset. Line
    /// sources (files) have `None`: their records are the lines.
    pub records: Option<RecordIndex>,
    /// A chunk of one line longer than the reader's line limit: `bytes` holds the line's head,
    /// and this its full length (without the line end). The rest of the line was skipped.
    pub oversize_line: Option<u64>,
    /// On a file's last chunk: the bytes after `end_offset` left unread, a last line that has
    /// neither its end nor a complete event yet ([`ChunkReader::open`]).
    #[serde(default)]
    pub unfinished_line: u64,
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
        match (&self.records, self.oversize_line) {
            (Some(_), _) => 0,
            (None, Some(_)) => self.first_line + 1,
            (None, None) => self.first_line + line_count(&self.bytes),
        }
    }

    /// The chunk's records. Blank lines of a file are not records; every Kafka record is one.
    pub fn records(&self) -> Box<dyn Iterator<Item = Record<'_>> + '_> {
        if self.oversize_line.is_some() {
            return Box::new(std::iter::once(Record {
                start: 0,
                bytes: &self.bytes,
                offset: self.byte_offset,
                line_number: self.first_line,
            }));
        }
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
/// A chunk always ends at a line end, so a line longer than `chunk_bytes` makes a larger chunk;
/// a line longer than the line limit is never held whole: its head makes a chunk of its own
/// ([`Chunk::oversize_line`]) and the rest is skipped, so no input can exhaust memory.
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
///
/// let mut reader = ChunkReader::new(0, Box::new(&b"ok\nxxxxxxxxxx\nok"[..]), 4).with_max_line_bytes(5);
/// let long = reader.next_chunk().unwrap().unwrap();
/// assert_eq!(long.bytes, b"ok\n");
/// let long = reader.next_chunk().unwrap().unwrap();
/// assert_eq!((long.bytes.as_slice(), long.oversize_line, long.first_line), (&b"xxxxx"[..], Some(10), 2));
/// assert_eq!(reader.next_chunk().unwrap().unwrap().bytes, b"ok");
/// ```
pub struct ChunkReader {
    partition: u32,
    /// The input's name, for people.
    name: String,
    input: Box<dyn Read>,
    chunk_bytes: usize,
    max_line_bytes: usize,
    /// Bytes read past the end of the previous chunk's last line.
    carry: Vec<u8>,
    seq: u64,
    byte_offset: u64,
    next_line: u64,
    done: bool,
    /// Whether an unfinished last line is left unread (files that a writer may still append to).
    hold_unfinished_line: bool,
    /// The unfinished line a previous run left unread where this reader starts, by length: found
    /// again unchanged, its writer is gone, and it is read (and quarantined) once.
    held_before: u64,
    opened_at: u64,
}

/// How much of an oversize line is read at a time while it is skipped.
const SKIP_BLOCK: usize = 1 << 20;

impl ChunkReader {
    pub fn new(partition: u32, input: Box<dyn Read>, chunk_bytes: usize) -> Self {
        ChunkReader {
            partition,
            name: format!("partition {partition}"),
            input,
            chunk_bytes: chunk_bytes.max(1),
            max_line_bytes: usize::MAX,
            carry: Vec::new(),
            seq: 0,
            byte_offset: 0,
            next_line: 1,
            done: false,
            hold_unfinished_line: false,
            held_before: 0,
            opened_at: 0,
        }
    }

    /// The unfinished last line (bytes) that the run which recorded this reader's start left
    /// unread ([`Chunk::unfinished_line`]).
    pub fn with_line_held_before(mut self, bytes: u64) -> Self {
        self.held_before = bytes;
        self
    }

    /// Lines longer than `max` bytes keep only their first `max` bytes; the rest is skipped.
    pub fn with_max_line_bytes(mut self, max: usize) -> Self {
        self.max_line_bytes = max.max(1);
        self
    }

    /// Opens `path`, or standard input for `-`, to read from byte `offset`, which is the start
    /// of line `line` (1-based). Standard input can only be read from its start.
    ///
    /// A file's last line without a line end that is not a complete JSON value is being written:
    /// it is left unread (the last chunk ends before it, [`Chunk::unfinished_line`] says how
    /// long it is) so that a later run reads it whole. A later run that finds it unchanged reads
    /// it as it is. Standard input has ended when it ends: its last line is always read.
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
            crate::ops::progress::add_input(0, None);
            Box::new(io::stdin())
        } else {
            let mut file = File::open(path).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot open input {path:?}: {e}"))
            })?;
            file.seek(SeekFrom::Start(offset))?;
            // What is there now is what the progress bar counts on; lines appended later are
            // read too, and the bar simply ends past its 100%.
            crate::ops::progress::add_input(offset, file.metadata().ok().map(|m| m.len()));
            Box::new(file)
        };
        let mut reader = Self::new(partition, input, chunk_bytes);
        reader.name = format!("{path:?}");
        reader.byte_offset = offset;
        reader.opened_at = offset;
        reader.next_line = line.max(1);
        reader.hold_unfinished_line = path != "-";
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
        let from = self.byte_offset;
        let chunk = self.read_chunk()?;
        crate::ops::progress::input_done(self.byte_offset - from);
        Ok(chunk)
    }

    fn read_chunk(&mut self) -> io::Result<Option<Chunk>> {
        if self.done {
            return Ok(None);
        }
        let mut bytes = std::mem::take(&mut self.carry);
        let mut eof = false;
        // The end of the last whole line in `bytes`, and how much of `bytes` has been searched.
        let mut cut = None;
        let mut searched = 0;
        loop {
            if let Some(i) = memchr::memrchr(b'\n', &bytes[searched..]) {
                cut = Some(searched + i + 1);
            }
            searched = bytes.len();
            let line_start = cut.unwrap_or(0);
            if bytes.len() - line_start > self.max_line_bytes {
                if line_start > 0 {
                    // The whole lines before the long one make a chunk first.
                    self.carry = bytes.split_off(line_start);
                    break;
                }
                return self.skip_oversize_line(bytes).map(Some);
            }
            if eof || (cut.is_some() && bytes.len() >= self.chunk_bytes) {
                break;
            }
            // Fill up to the chunk size; past it (a line longer than a chunk), grow by chunks.
            let want = match self.chunk_bytes.checked_sub(bytes.len()) {
                Some(room) if room > 0 => room,
                _ => self.chunk_bytes,
            };
            bytes.reserve(want);
            // `read_to_end` fills spare capacity without zeroing it first.
            let read = (&mut self.input)
                .take(want as u64)
                .read_to_end(&mut bytes)?;
            eof = read < want;
        }
        // At end of input the chunk takes everything; otherwise it ends at its last line end.
        if !eof && self.carry.is_empty() {
            let end = cut.expect("the loop ends with a cut");
            self.carry = bytes.split_off(end);
        }
        let last = eof && self.carry.is_empty();
        let unfinished_line = if last {
            self.hold_unfinished_line(&mut bytes)
        } else {
            0
        };
        let mut chunk = self.emit(bytes, last, None);
        chunk.unfinished_line = unfinished_line;
        Ok(Some(chunk))
    }

    /// Takes an unfinished last line off the input's last bytes; returns its length.
    fn hold_unfinished_line(&self, bytes: &mut Vec<u8>) -> u64 {
        let start = memchr::memrchr(b'\n', bytes).map_or(0, |i| i + 1);
        let line = &bytes[start..];
        let at = self.byte_offset + start as u64;
        let found_again = at == self.opened_at && line.len() as u64 == self.held_before;
        if !self.hold_unfinished_line
            || line.iter().all(u8::is_ascii_whitespace)
            || found_again
            || serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok()
        {
            return 0;
        }
        let held = line.len() as u64;
        tracing::warn!(
            "input {} ends mid-line: its last {held} bytes (from byte {at}) are neither a \
             complete event nor ended by a newline, so they are left unread until the line is \
             finished; a later run that finds them unchanged quarantines them",
            self.name
        );
        bytes.truncate(start);
        held
    }

    /// Keeps the head of a line longer than the limit and reads past its end without keeping it.
    fn skip_oversize_line(&mut self, mut head: Vec<u8>) -> io::Result<Chunk> {
        let mut length = head.len() as u64;
        head.truncate(self.max_line_bytes);
        let mut block = vec![0u8; SKIP_BLOCK];
        let mut line_end = 0;
        let eof = loop {
            let read = match self.input.read(&mut block) {
                Ok(0) => break true,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if let Some(i) = memchr::memchr(b'\n', &block[..read]) {
                length += i as u64;
                line_end = 1;
                self.carry = block[i + 1..read].to_vec();
                break false;
            }
            length += read as u64;
        };
        let consumed = length + line_end;
        let mut chunk = self.emit(head, eof, Some(length));
        chunk.end_offset = chunk.byte_offset + consumed;
        self.byte_offset = chunk.end_offset;
        Ok(chunk)
    }

    fn emit(&mut self, bytes: Vec<u8>, last: bool, oversize_line: Option<u64>) -> Chunk {
        let chunk = Chunk {
            partition: self.partition,
            seq: self.seq,
            byte_offset: self.byte_offset,
            first_line: self.next_line,
            last,
            end_offset: self.byte_offset + bytes.len() as u64,
            records: None,
            oversize_line,
            unfinished_line: 0,
            bytes,
        };
        self.seq += 1;
        self.byte_offset = chunk.end_offset;
        self.next_line = chunk.next_line();
        self.done = last;
        chunk
    }
}

fn line_count(bytes: &[u8]) -> u64 {
    let newlines = memchr::memchr_iter(b'\n', bytes).count() as u64;
    newlines + u64::from(!bytes.is_empty() && *bytes.last().unwrap() != b'\n')
}

/// The lines of a chunk with their byte offsets within it; a trailing `\r` is dropped.
pub fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= bytes.len() {
            return None;
        }
        let end = memchr::memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |i| start + i);
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

    /// Every line as the reader hands it out: (offset, line number, bytes kept, full length).
    fn read_lines(input: &[u8], size: usize, max_line: usize) -> Vec<(u64, u64, Vec<u8>, u64)> {
        let mut reader = ChunkReader::new(0, Box::new(input.to_vec().leak() as &[u8]), size)
            .with_max_line_bytes(max_line);
        let mut out = Vec::new();
        let mut expected_offset = 0;
        while let Some(chunk) = reader.next_chunk().unwrap() {
            assert_eq!(chunk.byte_offset, expected_offset);
            expected_offset = chunk.end_offset;
            match chunk.oversize_line {
                Some(length) => out.push((
                    chunk.byte_offset,
                    chunk.first_line,
                    chunk.bytes.clone(),
                    length,
                )),
                None => {
                    for (line_number, (start, line)) in
                        (chunk.first_line..).zip(lines(&chunk.bytes))
                    {
                        let offset = chunk.byte_offset + start as u64;
                        out.push((offset, line_number, line.to_vec(), line.len() as u64));
                    }
                }
            }
        }
        assert_eq!(expected_offset, input.len() as u64);
        out
    }

    proptest! {
        #[test]
        fn long_lines_keep_their_head_and_everything_else_is_exact(
            lines in proptest::collection::vec(proptest::collection::vec(
                proptest::prop_oneof![Just(b'a'), Just(b'\0'), Just(0xffu8), Just(b'\r')], 0..60), 1..30),
            trailing_newline in any::<bool>(),
            size in 1usize..32,
            max_line in 1usize..40,
        ) {
            let mut input = lines.join(&b'\n');
            if trailing_newline { input.push(b'\n'); }
            let got = read_lines(&input, size, max_line);
            let mut offset = 0u64;
            let mut expected = Vec::new();
            for (i, line) in lines.iter().enumerate() {
                if i + 1 == lines.len() && line.is_empty() && !trailing_newline {
                    break;
                }
                let kept = line.strip_suffix(b"\r").unwrap_or(line);
                expected.push((offset, i as u64 + 1, kept.len() as u64));
                offset += line.len() as u64 + 1;
            }
            let got_short: Vec<_> = got.iter().map(|(o, n, _, len)| (*o, *n, *len)).collect();
            // A long line's length counts its `\r`; a short line's does not.
            for ((o, n, len), (eo, en, elen)) in got_short.iter().zip(&expected) {
                prop_assert_eq!((o, n), (eo, en));
                prop_assert!(*len == *elen || *len == *elen + 1);
            }
            prop_assert_eq!(got_short.len(), expected.len());
            for (offset, _, kept, length) in &got {
                let at = *offset as usize;
                // A long line is cut to its head, unless it came whole in one read (then the
                // parser rejects it by its length): either way memory stays bounded.
                if (*length as usize) > max_line && kept.len() < *length as usize {
                    prop_assert_eq!(kept.len(), max_line);
                }
                prop_assert!(kept.len() <= (max_line + size).max(SKIP_BLOCK));
                prop_assert_eq!(&kept[..], &input[at..at + kept.len()]);
            }
        }

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
