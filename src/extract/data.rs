//! The `data` level: tags stored in initialized data, such as `WDF_DRIVER_CONFIG.DriverPoolTag`
//! or a `FLT_CONTEXT_REGISTRATION` array's `PoolTag` fields.
//!
//! A candidate is a 4-byte-aligned printable value whose run of printable bytes starts and ends
//! on 4-byte boundaries: a field, or an array of fields. A run that starts or ends elsewhere is
//! text (strings rarely fill whole aligned words), and its aligned pieces are left to the bytes
//! level. So is a run that spells a name the image imports (`ntoskrnl.exe`, an API name), the
//! commonest aligned text in a driver.

use foldhash::HashSet;

use super::Findings;
use super::image::Section;
use crate::tag::is_printable;

/// Records every aligned, field-shaped printable value of `section` that is not one of
/// `import_names`.
///
/// Such a run is a maximal sequence of aligned, wholly printable words whose neighbouring bytes
/// are not printable, so the section is read a word at a time (a byte at a time cost as much as
/// the code analysis of the image).
pub fn analyse(section: &Section, import_names: &HashSet<&[u8]>, findings: &mut Findings) {
    let data = section.data;
    let words = data.len() / 4;
    let printable_at = |i: usize| data.get(i).is_some_and(|&b| is_printable(b));
    let mut word = 0;
    while word < words {
        if !is_printable_word(&data[4 * word..4 * word + 4]) {
            word += 1;
            continue;
        }
        let first = word;
        while word < words && is_printable_word(&data[4 * word..4 * word + 4]) {
            word += 1;
        }
        let (start, end) = (4 * first, 4 * word);
        let alone = (start == 0 || !printable_at(start - 1)) && !printable_at(end);
        if alone && !import_names.contains(&data[start..end]) {
            for word in data[start..end].chunks_exact(4) {
                findings.data(u32::from_le_bytes([word[0], word[1], word[2], word[3]]));
            }
        }
    }
}

/// Whether all four bytes of `word` are printable ASCII (0x20-0x7E), without a branch per byte.
pub(super) fn is_printable_word(word: &[u8]) -> bool {
    let value = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
    // A byte below 0x20 borrows when 0x20 is subtracted; a byte above 0x7E carries into its
    // top bit when 0x01 is added (and a byte with its top bit set has it already).
    let below = value.wrapping_sub(0x2020_2020) & !value;
    let above = value.wrapping_add(0x0101_0101) | value;
    (below | above) & 0x8080_8080 == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::Evidence;

    fn levels(data: &[u8]) -> Vec<String> {
        let section = Section::for_test(".rdata", 0x2000, data);
        let mut findings = Findings::default();
        analyse(
            &section,
            &HashSet::from_iter([&b"ntoskrnl.exe"[..]]),
            &mut findings,
        );
        let mut tags: Vec<String> = findings
            .levels
            .iter()
            .inspect(|(_, level)| assert_eq!(**level, Evidence::Data))
            .map(|(tag, _)| tag.to_string())
            .collect();
        tags.sort();
        tags
    }

    #[test]
    fn aligned_fields_and_arrays_count() {
        assert_eq!(levels(b"\x10\0\0\0Tag1\x01\0\0\0"), vec!["Tag1"]);
        assert_eq!(levels(b"Tab1Tab2\0\0\0\0"), vec!["Tab1", "Tab2"]);
    }

    #[test]
    fn text_and_unaligned_values_do_not() {
        assert_eq!(
            levels(b"\0\0\0\0ntoskrnl.exe\0\0\0\0"),
            Vec::<String>::new()
        );
        assert_eq!(levels(b"\0\0\0\0Hello, world!\0\0\0"), Vec::<String>::new());
        assert_eq!(levels(b"\0\0Tag1\0\0"), Vec::<String>::new());
        assert_eq!(levels(b"abc"), Vec::<String>::new());
        assert_eq!(levels(b"Tag1T"), Vec::<String>::new());
        assert_eq!(levels(b"xTag1\0\0\0"), Vec::<String>::new());
    }

    #[test]
    fn a_field_at_either_end_of_the_section_counts() {
        assert_eq!(levels(b"Tag1\0\0\0\0Tag2"), vec!["Tag1", "Tag2"]);
        assert_eq!(levels(b"Tag1\0\0\0\0Tag2\0"), vec!["Tag1", "Tag2"]);
    }

    #[test]
    fn a_word_is_printable_exactly_when_its_four_bytes_are() {
        for byte in 0..=255u8 {
            for position in 0..4 {
                let mut word = *b"abcd";
                word[position] = byte;
                assert_eq!(
                    is_printable_word(&word),
                    is_printable(byte),
                    "{byte:#x} at {position}"
                );
            }
        }
    }
}
