//! Posting lists: ascending file ids, each stored as the LEB128 varint of its difference from
//! the previous id (the first from 0). A list read from a database is untrusted: decoding
//! checks every byte and fails instead of guessing. Evidence lists (schema 5) are posting lists
//! of [`evidence_entry`] integers.

use crate::extract::Evidence;

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

/// A posting list that does not decode: a varint cut short or too long, or ids that do not
/// ascend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Damaged;

/// The ids of a list, one at a time: an `Err` where it is damaged, then nothing more.
pub struct Ids<'a> {
    bytes: std::slice::Iter<'a, u8>,
    previous: i64,
    first: bool,
    failed: bool,
}

impl<'a> Ids<'a> {
    pub fn new(bytes: &'a [u8]) -> Ids<'a> {
        Ids {
            bytes: bytes.iter(),
            previous: 0,
            first: true,
            failed: false,
        }
    }

    fn step(&mut self) -> Option<Result<i64, Damaged>> {
        let mut delta = 0u64;
        let mut shift = 0u32;
        let mut started = false;
        for &byte in self.bytes.by_ref() {
            started = true;
            if shift > 56 {
                return Some(Err(Damaged));
            }
            delta |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 != 0 {
                shift += 7;
                continue;
            }
            let Ok(delta) = i64::try_from(delta) else {
                return Some(Err(Damaged));
            };
            if delta == 0 && !self.first {
                return Some(Err(Damaged));
            }
            self.first = false;
            return Some(
                self.previous
                    .checked_add(delta)
                    .ok_or(Damaged)
                    .inspect(|id| {
                        self.previous = *id;
                    }),
            );
        }
        // The end of the list, or a varint cut short.
        started.then_some(Err(Damaged))
    }
}

impl Iterator for Ids<'_> {
    type Item = Result<i64, Damaged>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let next = self.step();
        self.failed = matches!(next, Some(Err(_)));
        next
    }
}

/// The ids of a list, or `None` when it is damaged (a varint cut short or too long, or ids
/// that do not ascend).
pub fn decode(bytes: &[u8]) -> Option<Vec<i64>> {
    Ids::new(bytes).collect::<Result<_, _>>().ok()
}

/// Appends the list `next` to the list in `out`, whose last id is `last` (`None` when `out`
/// holds no list yet), giving the bytes [`encode`] gives the joined ids: only `next`'s first
/// varint changes (its difference is now from `last`), the rest is copied. Returns the last id
/// of the joined list. Refuses a damaged `next`, or one whose first id is not above `last`
/// (leaving `out` as it was).
pub fn append(out: &mut Vec<u8>, last: Option<i64>, next: &[u8]) -> Result<i64, Damaged> {
    let mut ids = Ids::new(next);
    let first = ids.next().ok_or(Damaged)??;
    let first_len = next.len() - ids.bytes.as_slice().len();
    let mut end = first;
    for id in ids {
        end = id?;
    }
    match last {
        None => out.extend_from_slice(next),
        Some(last) if first > last => {
            encode(&[first - last], out).map_err(|_| Damaged)?;
            out.extend_from_slice(&next[first_len..]);
        }
        Some(_) => return Err(Damaged),
    }
    Ok(end)
}

/// An evidence entry (schema 5): a content id or tag key with a level above bytes, as one
/// integer, `id * 4 + level - 2`, so that a list of them is a posting list ordered by id.
/// `None` for the bytes level, which has lists of its own, or an id out of range.
pub fn evidence_entry(id: i64, level: Evidence) -> Option<i64> {
    let step = level as i64 - Evidence::Data as i64;
    ((0..4).contains(&step) && (0..1 << 61).contains(&id)).then_some(id * 4 + step)
}

/// The id and level of an evidence entry. Every entry has one: its two low bits are one of the
/// four levels above bytes.
pub fn split_evidence_entry(entry: i64) -> (i64, Evidence) {
    let level = match entry & 3 {
        0 => Evidence::Data,
        1 => Evidence::Code,
        2 => Evidence::Arg,
        _ => Evidence::Call,
    };
    (entry >> 2, level)
}

/// The (id, level) pairs of an evidence list, or `None` when it is damaged.
pub fn decode_evidence(bytes: &[u8]) -> Option<Vec<(i64, Evidence)>> {
    Ids::new(bytes)
        .map(|entry| entry.map(split_evidence_entry))
        .collect::<Result<_, _>>()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_evidence_entry_holds_its_id_and_level() {
        for level in [
            Evidence::Data,
            Evidence::Code,
            Evidence::Arg,
            Evidence::Call,
        ] {
            let entry = evidence_entry(1234, level).unwrap();
            assert_eq!(split_evidence_entry(entry), (1234, level));
        }
        assert_eq!(evidence_entry(7, Evidence::Data), Some(28));
        assert_eq!(evidence_entry(7, Evidence::Call), Some(31));
        assert_eq!(evidence_entry(7, Evidence::Bytes), None);
        assert_eq!(evidence_entry(-1, Evidence::Code), None);
        let mut list = Vec::new();
        encode(&[28, 33, 31 * 4], &mut list).unwrap();
        assert_eq!(
            decode_evidence(&list),
            Some(vec![
                (7, Evidence::Data),
                (8, Evidence::Code),
                (31, Evidence::Data)
            ])
        );
        assert_eq!(decode_evidence(&[0x80]), None);
    }

    #[test]
    fn an_appended_list_is_what_the_joined_ids_encode_to() {
        let (mut out, mut whole) = (Vec::new(), Vec::new());
        encode(&[3, 200, 70_000], &mut whole).unwrap();
        let mut last = None;
        for piece in [&[3i64][..], &[200], &[70_000]] {
            let mut bytes = Vec::new();
            encode(piece, &mut bytes).unwrap();
            last = Some(append(&mut out, last, &bytes).unwrap());
        }
        assert_eq!((out, last), (whole, Some(70_000)));
        let mut out = vec![5];
        assert_eq!(append(&mut out, Some(5), &[5]), Err(Damaged));
        assert_eq!(append(&mut out, Some(5), &[]), Err(Damaged));
        assert_eq!(append(&mut out, Some(5), &[0x80]), Err(Damaged));
        assert_eq!(out, vec![5]);
    }

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
        fn appending_pieces_encodes_the_whole(
            mut ids in proptest::collection::vec(0i64..1 << 40, 0..60),
            cuts in proptest::collection::vec(0usize..60, 0..5),
        ) {
            ids.sort_unstable();
            ids.dedup();
            let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c.min(ids.len())).collect();
            bounds.extend([0, ids.len()]);
            bounds.sort_unstable();
            let (mut out, mut last) = (Vec::new(), None);
            for piece in bounds.windows(2).map(|w| &ids[w[0]..w[1]]).filter(|p| !p.is_empty()) {
                let mut bytes = Vec::new();
                encode(piece, &mut bytes).unwrap();
                last = Some(append(&mut out, last, &bytes).unwrap());
            }
            let mut whole = Vec::new();
            encode(&ids, &mut whole).unwrap();
            prop_assert_eq!(out, whole);
            prop_assert_eq!(last, ids.last().copied());
        }

        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
