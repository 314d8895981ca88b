//! Call-site analysis of ARM64 code.

use super::Findings;
use super::image::{Image, Section};

/// Analyses `code`, the start of `section`.
pub fn analyse(image: &Image, section: &Section, code: &[u8], findings: &mut Findings) {
    let _ = (image, section, code, findings);
}
