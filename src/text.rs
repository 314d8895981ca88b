//! Text in and out: the one decoder for text files pooltag reads (Pooltag.txt, localtag.txt,
//! `annotate` inputs) and the one escaping of untrusted strings shown to a person.
//!
//! Everything printed for a person may come from a file pooltag did not write: a driver's
//! version resource (chosen by whoever built it, malware included), a section or import name,
//! a Pooltag.txt line, a path, a database from another machine. A control character in it
//! (ESC starting an ANSI or OSC sequence, a C1 CSI, a carriage return that hides the text
//! before it) would act on the analyst's terminal instead of being shown, so [`escape`] turns
//! every one into visible text.

use std::borrow::Cow;

/// Untrusted text made safe for a terminal: every C0 control character (U+0000 to U+001F, tab,
/// carriage return and line feed included), DEL (U+007F) and every C1 control character (U+0080
/// to U+009F) is written as an escape, `\x1b` for C0 and DEL, `\u{9b}` for C1 (the same form as
/// a tag byte outside printable ASCII). Everything else, backslashes included, is kept, so
/// Windows paths read as written.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match u32::from(c) {
            n @ (0x00..=0x1f | 0x7f) => out.push_str(&format!("\\x{n:02x}")),
            n @ 0x80..=0x9f => out.push_str(&format!("\\u{{{n:x}}}")),
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// C0, DEL or C1.
fn is_control(c: char) -> bool {
    matches!(u32::from(c), 0x00..=0x1f | 0x7f..=0x9f)
}

/// How a text file was written, told by its byte-order mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// No byte-order mark: read as UTF-8, bytes that are not UTF-8 kept as they are.
    Utf8,
    /// UTF-8 after the mark EF BB BF (Notepad, `Out-File -Encoding utf8` in PowerShell 5).
    Utf8Bom,
    /// UTF-16 little-endian after FF FE (PowerShell 5's `>` and `Out-File`, Notepad's "Unicode").
    Utf16Le,
    /// UTF-16 big-endian after FE FF.
    Utf16Be,
}

/// The UTF-8 byte-order mark.
pub const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// A text file's content as UTF-8 bytes, its byte-order mark removed, and how it was written.
///
/// UTF-8 (with or without a mark) is returned as it is, borrowed: bytes that are not UTF-8 stay,
/// for the caller to keep (annotate passes lines through byte for byte) or read lossily. UTF-16
/// is decoded, an unpaired surrogate or an odd last byte becoming U+FFFD. UTF-16 without a mark
/// is not guessed: it reads as UTF-8 with NUL bytes.
pub fn decode(bytes: &[u8]) -> (Encoding, Cow<'_, [u8]>) {
    if let Some(rest) = bytes.strip_prefix(UTF8_BOM) {
        return (Encoding::Utf8Bom, Cow::Borrowed(rest));
    }
    let (encoding, rest, unit): (_, _, fn([u8; 2]) -> u16) = match bytes {
        [0xff, 0xfe, rest @ ..] => (Encoding::Utf16Le, rest, u16::from_le_bytes),
        [0xfe, 0xff, rest @ ..] => (Encoding::Utf16Be, rest, u16::from_be_bytes),
        _ => return (Encoding::Utf8, Cow::Borrowed(bytes)),
    };
    let chunks = rest.chunks_exact(2);
    let odd = !chunks.remainder().is_empty();
    let units = chunks.map(|pair| unit([pair[0], pair[1]]));
    let mut text: String = char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    if odd {
        text.push(char::REPLACEMENT_CHARACTER);
    }
    (encoding, Cow::Owned(text.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape("afd.sys"), "afd.sys");
        assert!(matches!(escape(r"C:\Windows\x.sys"), Cow::Borrowed(_)));
        assert_eq!(
            escape("Evil\x1b]0;owned\x07Corp"),
            "Evil\\x1b]0;owned\\x07Corp"
        );
        assert_eq!(escape("a\r\nb\tc\0"), "a\\x0d\\x0ab\\x09c\\x00");
        assert_eq!(
            escape("del\x7f csi\u{9b}2J nel\u{85}"),
            "del\\x7f csi\\u{9b}2J nel\\u{85}"
        );
        assert_eq!(
            escape("caf\u{e9} \u{a0}\u{fffd}"),
            "caf\u{e9} \u{a0}\u{fffd}"
        );
    }

    fn utf16(text: &str, little: bool) -> Vec<u8> {
        let mut bytes = if little {
            vec![0xff, 0xfe]
        } else {
            vec![0xfe, 0xff]
        };
        for unit in text.encode_utf16() {
            bytes.extend(if little {
                unit.to_le_bytes()
            } else {
                unit.to_be_bytes()
            });
        }
        bytes
    }

    #[test]
    fn every_encoding_decodes_to_the_same_text() {
        let text = "AfdA - afd.sys - caf\u{e9}\r\nIrp  - nt!io - \u{1F600}\n";
        let expect = |bytes: &[u8], encoding| {
            let (found, decoded) = decode(bytes);
            assert_eq!(found, encoding);
            assert_eq!(&*decoded, text.as_bytes());
        };
        expect(text.as_bytes(), Encoding::Utf8);
        expect(&[UTF8_BOM, text.as_bytes()].concat(), Encoding::Utf8Bom);
        expect(&utf16(text, true), Encoding::Utf16Le);
        expect(&utf16(text, false), Encoding::Utf16Be);
    }

    #[test]
    fn broken_utf16_and_non_utf8_bytes_do_not_fail() {
        let (_, decoded) = decode(&[0xff, 0xfe, b'A', 0, 0x00, 0xd8, b'B']);
        assert_eq!(&*decoded, "A\u{fffd}\u{fffd}".as_bytes());
        let (encoding, decoded) = decode(b"caf\xe9");
        assert_eq!((encoding, &*decoded), (Encoding::Utf8, &b"caf\xe9"[..]));
        assert_eq!(decode(b"").1.len(), 0);
        assert_eq!(decode(&[0xff]).0, Encoding::Utf8);
    }

    proptest::proptest! {
        #[test]
        fn escaped_text_holds_no_control_character(text in proptest::prelude::any::<String>()) {
            let escaped = escape(&text);
            proptest::prop_assert!(!escaped.chars().any(is_control));
            proptest::prop_assert!(!escaped.bytes().any(|b| b < 0x20 || b == 0x7f));
        }

        #[test]
        fn decoding_never_panics_and_gives_utf8_for_utf16(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            mark in 0usize..4,
        ) {
            let marks: [&[u8]; 4] = [b"", UTF8_BOM, b"\xff\xfe", b"\xfe\xff"];
            let input = [marks[mark], &bytes].concat();
            let (encoding, decoded) = decode(&input);
            if matches!(encoding, Encoding::Utf16Le | Encoding::Utf16Be) {
                proptest::prop_assert!(std::str::from_utf8(&decoded).is_ok());
            }
        }
    }
}
