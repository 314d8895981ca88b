//! Posting lists: ascending file ids, each stored as the LEB128 varint of its difference from
//! the previous id (the first from 0). A list read from a database is untrusted: decoding
//! checks every byte and fails instead of guessing.

/// Ids a posting list cannot hold: not strictly ascending, or negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotAscending;

/// Appends `ids` to `out`. Refuses (leaving `out` as far as it got) what [`decode`] would refuse:
/// ids that are negative or do not strictly ascend.
pub fn encode(ids: &[i64], out: &mut Vec<u8>) -> Result<(), NotAscending> {
    let mut previous = 0i64;
    for (i, &id) in ids.iter().enumerate() {
        if id < previous || (i > 0 && id == previous) {
            return Err(NotAscending);
        }
        let mut delta = (id - previous) as u64;
        previous = id;
        loop {
            let byte = (delta & 0x7f) as u8;
            delta >>= 7;
            if delta == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
    Ok(())
}

/// The ids of a list, or `None` when it is damaged (a varint cut short or too long, or ids
/// that do not ascend).
pub fn decode(bytes: &[u8]) -> Option<Vec<i64>> {
    let mut ids = Vec::new();
    let mut previous = 0i64;
    let mut delta = 0u64;
    let mut shift = 0u32;
    for &byte in bytes {
        if shift > 56 {
            return None;
        }
        delta |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 != 0 {
            shift += 7;
            continue;
        }
        let delta_i = i64::try_from(delta).ok()?;
        if delta_i == 0 && !ids.is_empty() {
            return None;
        }
        previous = previous.checked_add(delta_i)?;
        ids.push(previous);
        delta = 0;
        shift = 0;
    }
    (shift == 0).then_some(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_gaps_take_one_byte() {
        let mut out = Vec::new();
        encode(&[1, 2, 130, 131], &mut out).unwrap();
        assert_eq!(out, vec![1, 1, 128, 1, 1]);
        assert_eq!(decode(&out), Some(vec![1, 2, 130, 131]));
    }

    #[test]
    fn lists_the_decoder_would_refuse_are_not_encoded() {
        let mut out = Vec::new();
        assert_eq!(encode(&[3, 3], &mut out), Err(NotAscending));
        assert_eq!(encode(&[5, 4], &mut Vec::new()), Err(NotAscending));
        assert_eq!(encode(&[-1], &mut Vec::new()), Err(NotAscending));
        assert_eq!(encode(&[0, 1], &mut out.clone()), Ok(()));
    }

    #[test]
    fn damaged_lists_are_refused() {
        assert_eq!(decode(&[0x80]), None);
        assert_eq!(decode(&[1, 0]), None);
        assert_eq!(decode(&[0xff; 12]), None);
        assert_eq!(decode(&[]), Some(vec![]));
    }

    proptest! {
        #[test]
        fn round_trip(mut ids in proptest::collection::vec(1i64..i64::MAX / 4, 0..50)) {
            ids.sort_unstable();
            ids.dedup();
            let mut out = Vec::new();
            encode(&ids, &mut out).unwrap();
            prop_assert_eq!(decode(&out), Some(ids));
        }

        #[test]
        fn whatever_encodes_decodes_to_the_same_ids(ids in proptest::collection::vec(-3i64..300, 0..20)) {
            let mut out = Vec::new();
            if encode(&ids, &mut out).is_ok() {
                prop_assert_eq!(decode(&out), Some(ids));
            }
        }

        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
