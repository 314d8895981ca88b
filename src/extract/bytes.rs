//! The `bytes` evidence level: every four-byte window of a file whose bytes are all printable
//! ASCII, once per file. This is exactly the set of tags `findstr /m /l TAG` (or `grep -lF`) would
//! find the file for.

use crate::tag::{Tag, is_printable};

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
    pub fn collect(&mut self, data: &[u8]) -> Vec<Tag> {
        let mut codes: Vec<u32> = Vec::new();
        let mut run = 0usize; // printable bytes ending at the current position
        let mut code = 0usize; // base-95 code of the last four bytes
        for &b in data {
            if !is_printable(b) {
                run = 0;
                continue;
            }
            code = (code % (95 * 95 * 95)) * 95 + usize::from(b - 0x20);
            run += 1;
            if run >= 4 {
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
