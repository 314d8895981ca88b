//! Tables found through the code: data that the code reads as an array of 4-byte elements and
//! whose elements are printable is `data` evidence, whatever bytes surround it (the `data`
//! analysis of [`super::data`] needs the printable run to start and end on 4-byte boundaries,
//! which a table between two strings does not). The analysers report each table's address:
//! x86 `[table+reg*4]` (an absolute address), x64 `[reg+reg*4+d]` where the base register holds
//! an address taken with `lea reg, [rip+...]` (MSVC's `__ImageBase` plus the table's RVA as `d`
//! included), ARM64 `LDR Wt, [Xn, Xm, LSL #2]` where Xn holds an `ADRP`+`ADD` address. A string
//! is passed by address but rarely read 4 bytes at a time by index, so few strings pass.
//!
//! A table is the aligned printable words from its address up to the first word that is not
//! (or the next table), unless they spell a name the image imports or exports. Text right after
//! the table's last element passes for more elements: nothing tells where the table ends.

use foldhash::HashSet;

use super::Findings;
use super::data::is_printable_word;
use super::image::Image;

/// Addresses kept per image at most.
const MAX_REFERENCES: usize = 1 << 16;
/// Elements read per table at most.
const MAX_ELEMENTS: usize = 256;

/// The addresses the code of one image takes.
#[derive(Default)]
pub struct References {
    rvas: Vec<u32>,
}

impl References {
    /// The code reads a table of 4-byte elements at `rva`.
    pub fn add(&mut self, rva: u32) {
        if self.rvas.len() < MAX_REFERENCES {
            self.rvas.push(rva);
        }
    }

    /// Whether a reference to `rva` can change what [`References::analyse`] records: it starts
    /// a table (an aligned printable word of initialized data), or, unaligned in initialized
    /// data, may cut one short. Any other reference is skipped there, and cuts no table short
    /// (an aligned non-printable word ends the table it lies in anyway).
    pub fn may_matter(image: &Image, rva: u32) -> bool {
        let Some((section, offset)) = image.section_at(rva) else {
            return false;
        };
        if !section.initialized_data || section.executable {
            return false;
        }
        !rva.is_multiple_of(4)
            || section
                .data
                .get(offset..offset + 4)
                .is_some_and(is_printable_word)
    }

    /// Records the elements of every referenced table in initialized data as `data` evidence,
    /// unless they spell one of `import_names`.
    pub fn analyse(
        mut self,
        image: &Image,
        import_names: &HashSet<&[u8]>,
        findings: &mut Findings,
    ) {
        self.rvas.sort_unstable();
        self.rvas.dedup();
        for (i, &rva) in self.rvas.iter().enumerate() {
            let Some((section, offset)) = image.section_at(rva) else {
                continue;
            };
            if rva % 4 != 0 || !section.initialized_data || section.executable {
                continue;
            }
            let next = self
                .rvas
                .get(i + 1)
                .map_or(usize::MAX, |&n| (n - rva) as usize);
            let limit = section.data.len().min(offset.saturating_add(next));
            let words = section.data[offset..limit]
                .chunks_exact(4)
                .take(MAX_ELEMENTS);
            let table = words.take_while(|word| is_printable_word(word)).count();
            let bytes = &section.data[offset..offset + 4 * table];
            if import_names.contains(bytes) {
                continue;
            }
            for word in bytes.chunks_exact(4) {
                findings.data(u32::from_le_bytes([word[0], word[1], word[2], word[3]]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::Evidence;
    use crate::extract::image::{Arch, Section};
    use foldhash::HashMap;

    fn levels(rdata: &[u8], references: &[u32]) -> Vec<String> {
        let image = Image {
            arch: Arch::X64,
            image_base: 0x1_4000_0000,
            sections: vec![Section::for_test(".rdata", 0x2000, rdata)],
            imports: HashMap::default(),
            exported_apis: HashMap::default(),
            export_names: Vec::new(),
            function_starts: Vec::new(),
        };
        let mut found = References::default();
        for &rva in references {
            found.add(rva);
        }
        let mut findings = Findings::default();
        found.analyse(
            &image,
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
    fn a_referenced_table_between_strings_is_data() {
        let rdata = b"Hello, world\0abcTb01Tb02Tb03Tb04\nsee you\0";
        // The table at 0x10, in one printable run with the text before it.
        assert_eq!(levels(rdata, &[0x2010]), ["Tb01", "Tb02", "Tb03", "Tb04"]);
        // Up to the next table.
        assert_eq!(
            levels(rdata, &[0x2010, 0x2018]),
            ["Tb01", "Tb02", "Tb03", "Tb04"]
        );
        // Not referenced: nothing.
        assert_eq!(levels(rdata, &[]), Vec::<String>::new());
    }

    #[test]
    fn text_after_a_table_passes_for_elements_and_names_are_not_tables() {
        assert_eq!(
            levels(b"Tb01Tb02after\n\0\0", &[0x2000]),
            ["Tb01", "Tb02", "afte"]
        );
        // Unaligned; an import name.
        assert_eq!(levels(b"\0\0Tb01Tb02\0\0", &[0x2002]), Vec::<String>::new());
        assert_eq!(
            levels(b"ntoskrnl.exe\0\0\0\0", &[0x2000]),
            Vec::<String>::new()
        );
        // Outside any section, past its end, or in the last bytes: harmless.
        assert_eq!(
            levels(b"Tb0", &[0x2000, 0x9000, u32::MAX]),
            Vec::<String>::new()
        );
    }
}
