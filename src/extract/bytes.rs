//! The `bytes` evidence level: every four-byte window of a file whose bytes are all printable
//! ASCII, once per file. This is exactly the set of tags `findstr /m /l TAG` (or `grep -lF`) would
//! find the file for.

use crate::tag::Tag;

/// Number of printable four-byte strings: 95^4.
const SPACE: usize = 95 * 95 * 95 * 95;

/// Collects the distinct printable windows of files, reusing one bitmap of every possible
/// printable tag (10 MB) so that deduplication costs one bit test per window instead of a sort
/// of every window. One per thread.
pub struct WindowCollector {
    seen: Vec<u64>,
}

impl Default for WindowCollector {
    fn default() -> Self {
        WindowCollector {
            seen: vec![0; SPACE.div_ceil(64)],
        }
    }
}

impl WindowCollector {
    /// The distinct printable windows of `data`, sorted by tag key.
    ///
    /// Whether each byte is printable is found 64 bytes at a time, as a mask, and only the
    /// windows of four printable bytes are visited: a branch per byte on binary data,
    /// printable or not at random, cost more than the rest.
    pub fn collect(&mut self, data: &[u8]) -> Vec<Tag> {
        let mut codes: Vec<u32> = Vec::new();
        // The printable bytes just before the chunk, as the top bits of the previous mask.
        let mut before = 0u64;
        for (chunk_index, chunk) in data.chunks(64).enumerate() {
            let printable = printable_mask(chunk);
            // Bit i: the window ending at byte i is printable.
            let windows = printable
                & (printable << 1 | before >> 63)
                & (printable << 2 | before >> 62)
                & (printable << 3 | before >> 61);
            before = printable;
            let start = chunk_index * 64;
            let mut rest = windows;
            while rest != 0 {
                let end = start + rest.trailing_zeros() as usize;
                rest &= rest - 1;
                let code = data[end - 3..=end]
                    .iter()
                    .fold(0usize, |code, &b| code * 95 + usize::from(b - 0x20));
                let (word, bit) = (code / 64, 1u64 << (code % 64));
                if self.seen[word] & bit == 0 {
                    self.seen[word] |= bit;
                    codes.push(code as u32);
                }
            }
        }
        for &c in &codes {
            self.seen[c as usize / 64] = 0;
        }
        codes.sort_unstable();
        codes.into_iter().map(tag_of_code).collect()
    }
}

/// Bit `i` set when byte `i` of `chunk` (at most 64 bytes) is printable, 8 bytes at a time.
fn printable_mask(chunk: &[u8]) -> u64 {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut mask = 0;
    for (n, bytes) in chunk.chunks(8).enumerate() {
        let x = match <[u8; 8]>::try_from(bytes) {
            Ok(word) => u64::from_le_bytes(word),
            // The last bytes of a file: zeros are not printable.
            Err(_) => {
                let mut word = [0u8; 8];
                word[..bytes.len()].copy_from_slice(bytes);
                u64::from_le_bytes(word)
            }
        };
        // Per byte, without borrows between bytes: the low 7 bits at least 0x20, not 0x7F,
        // and the top bit clear.
        let at_least_20 = ((x | HIGH) - 0x20 * LOW) & HIGH;
        let is_7f = ((x | HIGH) - 0x7F * LOW) & HIGH;
        let printable = at_least_20 & !is_7f & !x & HIGH;
        // The top bit of each byte, gathered into 8 bits.
        let bits = ((printable >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56;
        mask |= bits << (8 * n);
    }
    mask
}

/// Base-95 code order is the same as key order, so a sorted list of codes stays sorted.
fn tag_of_code(code: u32) -> Tag {
    let mut bytes = [0u8; 4];
    let mut rest = code;
    for b in bytes.iter_mut().rev() {
        *b = (rest % 95) as u8 + 0x20;
        rest /= 95;
    }
    Tag(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// The definition, written as plainly as possible.
    fn naive(data: &[u8]) -> Vec<Tag> {
        let set: BTreeSet<Tag> = data
            .windows(4)
            .filter(|w| w.iter().all(|&b| (0x20..=0x7e).contains(&b)))
            .map(|w| Tag(w.try_into().unwrap()))
            .collect();
        set.into_iter().collect()
    }

    #[test]
    fn finds_each_window_once_in_key_order() {
        let mut collector = WindowCollector::default();
        let tags = collector.collect(b"\0AfdAfdA\x01Irp \xffab");
        let text: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        assert_eq!(text, vec!["AfdA", "Irp ", "dAfd", "fdAf"]);
    }

    #[test]
    fn edges_of_the_printable_range() {
        let mut collector = WindowCollector::default();
        assert_eq!(collector.collect(b"    ~~~~"), naive(b"    ~~~~"));
        assert_eq!(collector.collect(b"\x1f   \x7f"), Vec::<Tag>::new());
        assert_eq!(collector.collect(b"abc"), Vec::<Tag>::new());
    }

    #[test]
    fn the_printable_mask_of_every_byte_in_every_place() {
        use crate::tag::is_printable;
        let by_byte = |chunk: &[u8]| {
            (chunk.iter().enumerate())
                .fold(0u64, |mask, (i, &b)| mask | u64::from(is_printable(b)) << i)
        };
        for b in 0..=255u8 {
            // Each byte after each other byte: no borrow crosses from one to the next.
            for before in [0x00, 0x1F, 0x20, 0x7E, 0x7F, 0x80, 0xFF] {
                let chunk: Vec<u8> = (0..64)
                    .map(|i| if i % 2 == 0 { before } else { b })
                    .collect();
                assert_eq!(
                    printable_mask(&chunk),
                    by_byte(&chunk),
                    "{b:#x} after {before:#x}"
                );
            }
        }
        // A short last chunk: no bit past its end.
        for len in 0..=64 {
            let mask = printable_mask(&vec![b'A'; len]);
            assert_eq!(
                (mask.count_ones() as usize, mask.leading_zeros() as usize),
                (len, 64 - len)
            );
        }
    }

    proptest! {
        #[test]
        fn matches_the_naive_definition(data in proptest::collection::vec(
            prop_oneof![0x1eu8..=0x22, 0x41u8..=0x43, 0x7du8..=0x80, any::<u8>()], 0..400)) {
            let mut collector = WindowCollector::default();
            prop_assert_eq!(collector.collect(&data), naive(&data));
            // The bitmap is left clean for the next file.
            prop_assert_eq!(collector.collect(&data), naive(&data));
        }
    }
}
