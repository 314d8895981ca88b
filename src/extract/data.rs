//! The `data` level: tags stored in initialized data, such as `WDF_DRIVER_CONFIG.DriverPoolTag`
//! or a `FLT_CONTEXT_REGISTRATION` array's `PoolTag` fields.
//!
//! A candidate is a 4-byte-aligned printable value whose run of printable bytes starts and ends
//! on 4-byte boundaries: a field, or an array of fields. A run that starts or ends elsewhere is
//! text (strings rarely fill whole aligned words), and its aligned pieces are left to the bytes
//! level. So is a run that spells a name the image imports (`ntoskrnl.exe`, an API name), the
//! commonest aligned text in a driver.

use std::collections::HashSet;

use super::Findings;
use super::image::Section;
use crate::tag::is_printable;

/// Records every aligned, field-shaped printable value of `section` that is not one of
/// `import_names`.
pub fn analyse(section: &Section, import_names: &HashSet<&[u8]>, findings: &mut Findings) {
    let data = section.data;
    let mut start = 0;
    while start < data.len() {
        if !is_printable(data[start]) {
            start += 1;
            continue;
        }
        let end = data[start..]
            .iter()
            .position(|&b| !is_printable(b))
            .map_or(data.len(), |n| start + n);
        if start % 4 == 0 && end % 4 == 0 && !import_names.contains(&data[start..end]) {
            for word in data[start..end].chunks_exact(4) {
                findings.data(u32::from_le_bytes([word[0], word[1], word[2], word[3]]));
            }
        }
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::Evidence;

    fn levels(data: &[u8]) -> Vec<String> {
        let section = Section {
            name: ".rdata".to_owned(),
            rva: 0x2000,
            data,
            executable: false,
            initialized_data: true,
        };
        let mut findings = Findings::default();
        analyse(
            &section,
            &HashSet::from([&b"ntoskrnl.exe"[..]]),
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
    }
}
