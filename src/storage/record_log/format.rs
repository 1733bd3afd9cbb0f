//! The on-disk format of record segments, without I/O.
//!
//! A segment file starts with a 24-byte header and holds entries back to back:
//!
//! ```text
//! file header  [b"KEELRLOG"][version u32][segment seq u64][crc u32 of the 20 bytes before]
//! entry        header, the same header again, payload
//! header       [ENTRY_MAGIC u32][header crc u32][loglet u64][first u64][count u32][payload len u32]
//! payload      count × ([len u32][crc u32][record bytes])
//! ```
//!
//! All integers are big-endian. The entry header's crc covers the 24 bytes
//! after it (loglet .. payload len), so a damaged length can never send a
//! reader astray; each record's crc covers its loglet, its offset and its
//! bytes, so a record is self-validating: a flipped byte, a record read from
//! the wrong place, or a torn write is found, and that one record is treated
//! as missing. The header is written twice so that damage to one copy still
//! says *which* records the entry held (a log-server must know what it lost:
//! a seal must not count a server that lost an acknowledged record); damage
//! to both copies is counted as unattributable. The magic lets a scan find
//! the next intact entry after a damaged header.

use crate::types::{LogletId, Offset};

/// The file header's magic.
pub const FILE_MAGIC: &[u8; 8] = b"KEELRLOG";
/// The format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
pub const FILE_HEADER_LEN: usize = 24;
pub const ENTRY_MAGIC: u32 = 0x4B52_4543; // "KREC"
/// One copy of an entry header.
pub const HEADER_COPY_LEN: usize = 32;
/// Both copies: where the payload starts.
pub const ENTRY_HEADER_LEN: usize = 2 * HEADER_COPY_LEN;
/// Per record: length and crc.
pub const RECORD_HEADER_LEN: usize = 8;

pub fn crc(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

fn record_crc(loglet: LogletId, offset: Offset, bytes: &[u8]) -> u32 {
    crc(&[&loglet.0.to_be_bytes(), &offset.to_be_bytes(), bytes])
}

pub fn encode_file_header(seq: u64) -> [u8; FILE_HEADER_LEN] {
    let mut h = [0u8; FILE_HEADER_LEN];
    h[..8].copy_from_slice(FILE_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    h[12..20].copy_from_slice(&seq.to_be_bytes());
    let c = crc(&[&h[..20]]);
    h[20..24].copy_from_slice(&c.to_be_bytes());
    h
}

/// The segment sequence number in a file header, if the header is intact.
pub fn decode_file_header(h: &[u8]) -> Result<u64, String> {
    let h = h
        .get(..FILE_HEADER_LEN)
        .ok_or("file shorter than its header")?;
    if &h[..8] != FILE_MAGIC {
        return Err("not a record segment (bad magic)".into());
    }
    if be32(&h[20..24]) != crc(&[&h[..20]]) {
        return Err("file header checksum mismatch".into());
    }
    let version = be32(&h[8..12]);
    if version != FORMAT_VERSION {
        return Err(format!("unknown segment format version {version}"));
    }
    Ok(be64(&h[12..20]))
}

/// The fixed part of an entry, once its checksum was verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryHeader {
    pub loglet: LogletId,
    pub first: Offset,
    pub count: u32,
    pub payload_len: u32,
}

impl EntryHeader {
    /// Bytes of the whole entry, header included.
    pub fn entry_len(&self) -> u64 {
        ENTRY_HEADER_LEN as u64 + self.payload_len as u64
    }
    /// One past the last offset the entry holds (saturating: a verified
    /// header from a peer-free source can still carry extreme values).
    pub fn end(&self) -> Offset {
        self.first.saturating_add(self.count as Offset)
    }
}

/// Encodes the records at `first, first+1, ...` of `loglet` as one entry.
/// `None` if they do not fit the format (more than `u32` of anything).
pub fn encode_entry<R: AsRef<[u8]>>(
    loglet: LogletId,
    first: Offset,
    records: &[R],
) -> Option<Vec<u8>> {
    let count = u32::try_from(records.len()).ok()?;
    let mut payload_len = 0usize;
    for r in records {
        payload_len = payload_len.checked_add(RECORD_HEADER_LEN + r.as_ref().len())?;
    }
    let payload_len = u32::try_from(payload_len).ok()?;
    first.checked_add(count as Offset)?;
    let mut out = Vec::with_capacity(ENTRY_HEADER_LEN + payload_len as usize);
    out.extend_from_slice(&ENTRY_MAGIC.to_be_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&loglet.0.to_be_bytes());
    out.extend_from_slice(&first.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&payload_len.to_be_bytes());
    let c = crc(&[&out[8..HEADER_COPY_LEN]]);
    out[4..8].copy_from_slice(&c.to_be_bytes());
    out.extend_from_within(..HEADER_COPY_LEN);
    for (i, r) in records.iter().enumerate() {
        let r = r.as_ref();
        out.extend_from_slice(&(r.len() as u32).to_be_bytes());
        let c = record_crc(loglet, first + i as Offset, r);
        out.extend_from_slice(&c.to_be_bytes());
        out.extend_from_slice(r);
    }
    Some(out)
}

/// Why an entry header could not be used.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer bytes than a header: the end of the data (or a torn write).
    Short,
    /// No entry starts here.
    BadMagic,
    /// The header is damaged.
    BadChecksum,
}

/// The entry header at the start of `bytes`, from whichever copy is intact.
pub fn decode_entry_header(bytes: &[u8]) -> Result<EntryHeader, HeaderError> {
    let both = bytes.get(..ENTRY_HEADER_LEN).ok_or(HeaderError::Short)?;
    decode_copy(&both[..HEADER_COPY_LEN])
        .or_else(|first| decode_copy(&both[HEADER_COPY_LEN..]).map_err(|_| first))
}

fn decode_copy(h: &[u8]) -> Result<EntryHeader, HeaderError> {
    if be32(&h[..4]) != ENTRY_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    if be32(&h[4..8]) != crc(&[&h[8..HEADER_COPY_LEN]]) {
        return Err(HeaderError::BadChecksum);
    }
    Ok(EntryHeader {
        loglet: LogletId(be64(&h[8..16])),
        first: be64(&h[16..24]),
        count: be32(&h[24..28]),
        payload_len: be32(&h[28..32]),
    })
}

/// One record of an entry as found on disk.
#[derive(Debug, PartialEq, Eq)]
pub enum RecordSlot<'a> {
    Intact(&'a [u8]),
    /// Its checksum does not match (or the payload ended inside it).
    Damaged,
}

/// The records of an entry's payload, offset by offset. Never panics: a
/// payload that ends early yields `Damaged` for every offset it cannot hold.
pub fn decode_records<'a>(
    header: &EntryHeader,
    payload: &'a [u8],
) -> impl Iterator<Item = (Offset, RecordSlot<'a>)> + 'a {
    let (loglet, first, count) = (header.loglet, header.first, header.count);
    let mut at = 0usize;
    let mut broken = false;
    (0..count as Offset).map(move |i| {
        let offset = first.saturating_add(i);
        if broken {
            return (offset, RecordSlot::Damaged);
        }
        let slot = (|| {
            let h = payload.get(at..at.checked_add(RECORD_HEADER_LEN)?)?;
            let len = be32(&h[..4]) as usize;
            let want = be32(&h[4..8]);
            let start = at + RECORD_HEADER_LEN;
            let bytes = payload.get(start..start.checked_add(len)?)?;
            at = start + len;
            Some((bytes, want))
        })();
        match slot {
            Some((bytes, want)) if record_crc(loglet, offset, bytes) == want => {
                (offset, RecordSlot::Intact(bytes))
            }
            Some(_) => (offset, RecordSlot::Damaged),
            None => {
                // A length we cannot follow: nothing after it can be located.
                broken = true;
                (offset, RecordSlot::Damaged)
            }
        }
    })
}

fn be32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::LogId;

    fn loglet() -> LogletId {
        LogletId::new(LogId(3), 7)
    }

    fn intact(h: &EntryHeader, payload: &[u8]) -> Vec<(Offset, Option<Vec<u8>>)> {
        decode_records(h, payload)
            .map(|(o, s)| match s {
                RecordSlot::Intact(b) => (o, Some(b.to_vec())),
                RecordSlot::Damaged => (o, None),
            })
            .collect()
    }

    #[test]
    fn entries_round_trip() {
        let recs = [b"alpha".to_vec(), vec![], b"c".to_vec()];
        let e = encode_entry(loglet(), 40, &recs).unwrap();
        let h = decode_entry_header(&e).unwrap();
        assert_eq!(
            h,
            EntryHeader {
                loglet: loglet(),
                first: 40,
                count: 3,
                payload_len: (e.len() - ENTRY_HEADER_LEN) as u32
            }
        );
        assert_eq!(h.entry_len(), e.len() as u64);
        assert_eq!(
            intact(&h, &e[ENTRY_HEADER_LEN..]),
            vec![
                (40, Some(b"alpha".to_vec())),
                (41, Some(vec![])),
                (42, Some(b"c".to_vec()))
            ]
        );
        assert_eq!(decode_file_header(&encode_file_header(9)), Ok(9));
    }

    #[test]
    fn every_flipped_byte_is_caught_and_attributed() {
        let recs = [b"one".to_vec(), b"two".to_vec()];
        let e = encode_entry(loglet(), 0, &recs).unwrap();
        let (r0, r1) = (ENTRY_HEADER_LEN, ENTRY_HEADER_LEN + 11);
        for i in 0..e.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = e.clone();
                bad[i] ^= bit;
                // One damaged header copy: the other still says what the
                // entry holds.
                let h = decode_entry_header(&bad).unwrap_or_else(|_| panic!("byte {i}"));
                assert_eq!((h.loglet, h.first, h.count), (loglet(), 0, 2), "byte {i}");
                let slots = intact(&h, &bad[ENTRY_HEADER_LEN..]);
                let good: Vec<Offset> = slots
                    .iter()
                    .filter(|(_, s)| s.is_some())
                    .map(|(o, _)| *o)
                    .collect();
                if i < ENTRY_HEADER_LEN {
                    assert_eq!(good, vec![0, 1], "byte {i}: a header copy is redundant");
                } else if (r0..r0 + 4).contains(&i) || (r1..r1 + 4).contains(&i) {
                    // A flipped length loses its record and may lose the
                    // ones after it.
                    assert!(good.len() < 2, "byte {i}: a damaged record was served");
                } else {
                    let hit = if i < r1 { 0 } else { 1 };
                    assert_eq!(good, vec![1 - hit], "byte {i}: exactly its record damaged");
                }
            }
        }
        // Both copies damaged: no attribution.
        let mut bad = e.clone();
        bad[10] ^= 1;
        bad[HEADER_COPY_LEN + 10] ^= 1;
        assert_eq!(decode_entry_header(&bad), Err(HeaderError::BadChecksum));
        let mut bad = encode_file_header(1);
        bad[13] ^= 1;
        assert!(decode_file_header(&bad).is_err());
        assert!(decode_file_header(&[0u8; 3]).is_err());
    }

    #[test]
    fn a_record_read_as_another_offset_is_damaged() {
        let e = encode_entry(loglet(), 5, &[b"x".to_vec()]).unwrap();
        let mut h = decode_entry_header(&e).unwrap();
        h.first = 6;
        assert_eq!(intact(&h, &e[ENTRY_HEADER_LEN..]), vec![(6, None)]);
    }

    #[test]
    fn short_payloads_are_damaged_not_panics() {
        let e = encode_entry(loglet(), 0, &[b"abc".to_vec(), b"def".to_vec()]).unwrap();
        let h = decode_entry_header(&e).unwrap();
        for cut in ENTRY_HEADER_LEN..e.len() {
            let slots = intact(&h, &e[ENTRY_HEADER_LEN..cut]);
            assert_eq!(slots.len(), 2);
            assert!(slots[1].1.is_none(), "cut at {cut}");
        }
        assert_eq!(decode_entry_header(&e[..10]), Err(HeaderError::Short));
        // A count larger than the payload: the extra offsets are damaged.
        let mut h2 = h;
        h2.count = 1000;
        let slots = intact(&h2, &e[ENTRY_HEADER_LEN..]);
        assert_eq!(slots.len(), 1000);
        assert_eq!(slots.iter().filter(|(_, s)| s.is_some()).count(), 2);
    }
}
