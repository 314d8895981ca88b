//! Pool tags and the patterns that select them.
//!
//! A tag is four bytes in **memory order**, the order PoolMon and WinDbg display (`AfdA`). In the
//! database a tag is the big-endian integer of those bytes ([`Tag::key`]), so that sorting by key
//! sorts by the displayed text and a fixed prefix (`Afd?`, `Ul*`) is one key range.

use std::fmt;

/// The PROTECTED_POOL bit: bit 31 of the tag value, the high bit of the fourth displayed byte.
const PROTECTED_POOL: u32 = 0x8000_0000;

/// A four-byte pool tag in display (memory) order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(pub [u8; 4]);

impl Tag {
    /// The tag whose little-endian value is `value` (`0x41646641` is `AfdA`), with the
    /// PROTECTED_POOL bit cleared, as tools do before display.
    pub fn from_value(value: u32) -> Tag {
        Tag((value & !PROTECTED_POOL).to_le_bytes())
    }

    /// The database key: the displayed bytes read as a big-endian integer.
    pub fn key(self) -> u32 {
        u32::from_be_bytes(self.0)
    }

    /// The tag stored under a database key.
    pub fn from_key(key: u32) -> Tag {
        Tag(key.to_be_bytes())
    }

    /// True when all four bytes are printable ASCII (0x20-0x7E), as tags seen in practice are.
    pub fn is_printable(self) -> bool {
        self.0.iter().all(|&b| is_printable(b))
    }
}

/// Printable ASCII, the byte range a real-world tag is made of.
pub fn is_printable(byte: u8) -> bool {
    (0x20..=0x7e).contains(&byte)
}

impl fmt::Display for Tag {
    /// The four characters; a byte outside printable ASCII is written `\xNN`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in &self.0 {
            if is_printable(b) {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// What one position of a pattern accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    Byte(u8),
    Any,
}

/// A tag pattern: a tag typed by a user (`Irp`, `Afd?`, `Ul*`, `0x41646641`) or a tag field of a
/// Pooltag.txt line, which uses the same wildcards.
///
/// Rules: one to four characters, padded with spaces to four; `?` matches any one character; `*`
/// matches any rest and must be last; `0x` followed by hex digits, when the pattern is longer than
/// four characters, is the tag whose little-endian value that is (PROTECTED_POOL cleared). A
/// pattern of four characters or fewer is always literal, so `0x12` is the tag `0x12`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagPattern {
    positions: [Position; 4],
}

/// Why a pattern was refused; the message names the pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError(pub String);

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PatternError {}

impl TagPattern {
    /// Parses a pattern as a user types it.
    pub fn parse(text: &str) -> Result<TagPattern, PatternError> {
        let refuse = |why: &str| PatternError(format!("invalid tag pattern '{text}': {why}"));
        if text.is_empty() {
            return Err(refuse("empty"));
        }
        if !text.is_ascii() {
            return Err(refuse("tags are ASCII"));
        }
        if text.len() > 4 {
            return match parse_hex(text) {
                Some(value) => Ok(TagPattern::exact(Tag::from_value(value))),
                None => Err(refuse(
                    "longer than 4 characters (a tag value is written 0x followed by up to 8 hex digits)",
                )),
            };
        }
        if text.bytes().any(|b| !is_printable(b)) {
            return Err(refuse("contains a control character"));
        }
        if let Some(star) = text.find('*')
            && star != text.len() - 1
        {
            return Err(refuse(
                "'*' stands for the rest of the tag and must come last",
            ));
        }
        Ok(TagPattern::from_field(text))
    }

    /// The pattern of a tag field as written in a Pooltag.txt line (1-4 printable ASCII
    /// characters, checked by the caller): the same wildcards, no hex form.
    pub fn from_field(field: &str) -> TagPattern {
        let mut positions = [Position::Byte(b' '); 4];
        for (i, b) in field.bytes().take(4).enumerate() {
            match b {
                b'*' => {
                    positions[i..].fill(Position::Any);
                    break;
                }
                b'?' => positions[i] = Position::Any,
                _ => positions[i] = Position::Byte(b),
            }
        }
        TagPattern { positions }
    }

    /// The pattern matching exactly one tag.
    pub fn exact(tag: Tag) -> TagPattern {
        TagPattern {
            positions: tag.0.map(Position::Byte),
        }
    }

    /// True for `*`, `????` and the like: a pattern that selects the whole index.
    pub fn matches_everything(&self) -> bool {
        self.positions.iter().all(|p| *p == Position::Any)
    }

    /// The one tag this pattern matches, when it has no wildcard.
    pub fn as_tag(&self) -> Option<Tag> {
        let mut bytes = [0u8; 4];
        for (out, position) in bytes.iter_mut().zip(self.positions) {
            match position {
                Position::Byte(b) => *out = b,
                Position::Any => return None,
            }
        }
        Some(Tag(bytes))
    }

    /// Does `tag` match?
    pub fn matches(&self, tag: Tag, ignore_case: bool) -> bool {
        self.positions
            .iter()
            .zip(tag.0)
            .all(|(position, b)| match *position {
                Position::Any => true,
                Position::Byte(p) => same_byte(p, b, ignore_case),
            })
    }

    /// Is there a tag that both patterns match? This is how a query meets a wildcard line of
    /// Pooltag.txt: `AfdA` meets `Afd?`, and `Afd?` meets `AfdA`.
    pub fn overlaps(&self, other: &TagPattern, ignore_case: bool) -> bool {
        self.positions
            .iter()
            .zip(other.positions)
            .all(|(a, b)| match (*a, b) {
                (Position::Byte(x), Position::Byte(y)) => same_byte(x, y, ignore_case),
                _ => true,
            })
    }

    /// Inclusive database key ranges that hold every tag this pattern matches: one per case
    /// variant of the fixed prefix (at most 16), or the whole key space when the first
    /// position is a wildcard. Callers still filter with [`TagPattern::matches`].
    pub fn key_ranges(&self, ignore_case: bool) -> Vec<(u32, u32)> {
        let prefix: Vec<u8> = self
            .positions
            .iter()
            .map_while(|p| match *p {
                Position::Byte(b) => Some(b),
                Position::Any => None,
            })
            .collect();
        let mut variants: Vec<Vec<u8>> = vec![Vec::new()];
        for &b in &prefix {
            let mut spellings = vec![b];
            if ignore_case && b.is_ascii_alphabetic() {
                spellings.push(b ^ 0x20);
            }
            variants = variants
                .into_iter()
                .flat_map(|v| {
                    spellings.iter().map(move |&s| {
                        let mut next = v.clone();
                        next.push(s);
                        next
                    })
                })
                .collect();
        }
        let mut ranges: Vec<(u32, u32)> = variants
            .into_iter()
            .map(|v| {
                let mut low = [0x00u8; 4];
                let mut high = [0xffu8; 4];
                low[..v.len()].copy_from_slice(&v);
                high[..v.len()].copy_from_slice(&v);
                (u32::from_be_bytes(low), u32::from_be_bytes(high))
            })
            .collect();
        ranges.sort_unstable();
        ranges
    }
}

impl fmt::Display for TagPattern {
    /// Four characters, `?` for a wildcard position (`Ul*` shows as `Ul??`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for position in self.positions {
            match position {
                Position::Any => f.write_str("?")?,
                Position::Byte(b) if is_printable(b) => write!(f, "{}", b as char)?,
                Position::Byte(b) => write!(f, "\\x{b:02x}")?,
            }
        }
        Ok(())
    }
}

fn same_byte(a: u8, b: u8, ignore_case: bool) -> bool {
    if ignore_case {
        a.eq_ignore_ascii_case(&b)
    } else {
        a == b
    }
}

/// `0x` and one to eight hex digits.
fn parse_hex(text: &str) -> Option<u32> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> Tag {
        Tag(s.as_bytes().try_into().unwrap())
    }

    #[test]
    fn short_patterns_are_padded_with_spaces() {
        let p = TagPattern::parse("Irp").unwrap();
        assert_eq!(p.as_tag(), Some(tag("Irp ")));
        assert_eq!(p.to_string(), "Irp ");
        assert_eq!(TagPattern::parse("C").unwrap().as_tag(), Some(tag("C   ")));
    }

    #[test]
    fn question_mark_matches_one_character_and_star_the_rest() {
        let afd = TagPattern::parse("Afd?").unwrap();
        assert!(afd.matches(tag("AfdA"), false));
        assert!(afd.matches(tag("Afd "), false));
        assert!(!afd.matches(tag("AfeA"), false));
        let ul = TagPattern::parse("Ul*").unwrap();
        assert_eq!(ul.to_string(), "Ul??");
        assert!(ul.matches(tag("UlHT"), false));
        assert!(ul.matches(tag("Ul  "), false));
        assert!(!ul.matches(tag("uLHT"), false));
        let mid = TagPattern::parse("A?dA").unwrap();
        assert!(mid.matches(tag("AfdA"), false));
        assert_eq!(mid.as_tag(), None);
    }

    #[test]
    fn ignore_case_matches_every_spelling() {
        let p = TagPattern::parse("afda").unwrap();
        assert!(!p.matches(tag("AfdA"), false));
        assert!(p.matches(tag("AfdA"), true));
        assert_eq!(p.key_ranges(true).len(), 16);
        assert_eq!(TagPattern::parse("8042").unwrap().key_ranges(true).len(), 1);
    }

    #[test]
    fn hex_is_the_little_endian_value() {
        let p = TagPattern::parse("0x41646641").unwrap();
        assert_eq!(p.as_tag(), Some(tag("AfdA")));
        assert_eq!(Tag::from_value(0x4164_6641).key(), 0x4166_6441);
    }

    #[test]
    fn protected_pool_bit_is_cleared() {
        let p = TagPattern::parse("0xC1646641").unwrap();
        assert_eq!(p.as_tag(), Some(tag("AfdA")));
        assert_eq!(Tag::from_value(0xC164_6641), tag("AfdA"));
    }

    #[test]
    fn four_characters_are_always_literal() {
        assert_eq!(
            TagPattern::parse("0x12").unwrap().as_tag(),
            Some(tag("0x12"))
        );
    }

    #[test]
    fn bad_patterns_are_refused_with_the_pattern_named() {
        let err = |s: &str| TagPattern::parse(s).unwrap_err().to_string();
        assert_eq!(err(""), "invalid tag pattern '': empty");
        assert_eq!(
            err("AfdAB"),
            "invalid tag pattern 'AfdAB': longer than 4 characters (a tag value is written 0x followed by up to 8 hex digits)"
        );
        assert_eq!(err("Afé"), "invalid tag pattern 'Afé': tags are ASCII");
        assert_eq!(
            err("A*d"),
            "invalid tag pattern 'A*d': '*' stands for the rest of the tag and must come last"
        );
        assert!(err("0x123456789").contains("longer than 4 characters"));
        assert_eq!(
            err("A\tb"),
            "invalid tag pattern 'A\tb': contains a control character"
        );
    }

    #[test]
    fn non_printable_tags_display_escaped() {
        assert_eq!(Tag::from_value(0x0000_1234).to_string(), "4\\x12\\x00\\x00");
    }

    #[test]
    fn patterns_overlap_in_both_directions() {
        let field = TagPattern::from_field("Afd?");
        assert!(TagPattern::parse("AfdA").unwrap().overlaps(&field, false));
        assert!(TagPattern::parse("Af*").unwrap().overlaps(&field, false));
        assert!(!TagPattern::parse("Afe?").unwrap().overlaps(&field, false));
        assert!(
            TagPattern::parse("Aml")
                .unwrap()
                .overlaps(&TagPattern::from_field("Aml*"), false)
        );
        assert!(TagPattern::parse("aFDa").unwrap().overlaps(&field, true));
    }

    #[test]
    fn key_ranges_cover_the_prefix() {
        let ranges = TagPattern::parse("Ul*").unwrap().key_ranges(false);
        assert_eq!(ranges, vec![(0x556c_0000, 0x556c_ffff)]);
        let all = TagPattern::parse("?fdA").unwrap().key_ranges(false);
        assert_eq!(all, vec![(0, u32::MAX)]);
    }
}
