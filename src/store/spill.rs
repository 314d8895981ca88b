//! Segments of posting lists spilled while an index is built: each a temporary file (deleted
//! by the system when closed, even if pooltag is killed) holding, in tag order, each tag's
//! encoded list of the pairs of that segment: tag (u32, little-endian), length (u32), the list.
//!
//! Files rather than an SQLite table: a segment is written as one run of appends, and read
//! back on another thread than the connection's, which merges them while the connection
//! inserts what is merged (see `IndexWriter::write_postings`).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};

/// A segment, written.
pub struct Segment {
    file: File,
}

impl Segment {
    /// Writes `lists` (tag order, each list encoded) into a new temporary file; fails at the
    /// first list that does.
    pub fn write(lists: impl Iterator<Item = io::Result<(u32, Vec<u8>)>>) -> io::Result<Segment> {
        let mut out = BufWriter::with_capacity(1 << 16, tempfile::tempfile()?);
        for list in lists {
            let (tag, list) = list?;
            let len = u32::try_from(list.len()).map_err(io::Error::other)?;
            out.write_all(&tag.to_le_bytes())?;
            out.write_all(&len.to_le_bytes())?;
            out.write_all(&list)?;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        Ok(Segment { file })
    }

    /// The segment's lists, in tag order.
    pub fn read(mut self) -> io::Result<Lists> {
        self.file.seek(SeekFrom::Start(0))?;
        Ok(Lists {
            input: BufReader::with_capacity(1 << 16, self.file),
            done: false,
        })
    }
}

/// The lists of a segment as they are read.
pub struct Lists {
    input: BufReader<File>,
    done: bool,
}

impl Lists {
    fn read_next(&mut self) -> io::Result<Option<(u32, Vec<u8>)>> {
        let mut head = [0u8; 8];
        // The end of the file between two lists is the end of the segment.
        match self.input.read(&mut head[..1])? {
            0 => return Ok(None),
            _ => self.input.read_exact(&mut head[1..])?,
        }
        let tag = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let mut list = vec![0; len];
        self.input.read_exact(&mut list)?;
        Ok(Some((tag, list)))
    }
}

impl Iterator for Lists {
    type Item = io::Result<(u32, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.read_next().transpose();
        self.done = !matches!(next, Some(Ok(_)));
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_reads_back_what_was_written() {
        let lists = vec![(1, vec![1, 2]), (7, vec![]), (u32::MAX, vec![0x80, 1])];
        let read: Vec<(u32, Vec<u8>)> = Segment::write(lists.clone().into_iter().map(Ok))
            .unwrap()
            .read()
            .unwrap()
            .collect::<io::Result<_>>()
            .unwrap();
        assert_eq!(read, lists);
        let empty = Segment::write(std::iter::empty()).unwrap().read().unwrap();
        assert_eq!(empty.count(), 0);
    }
}
