//! The VHDX log (MS-VHDX 2.3): find the active sequence of entries for the header's LogGuid and
//! turn it into the writes that replay it. Entries carrying another GUID are ignored.
use crate::backing::Backing;
use crate::error::{corrupt, Result};
use crate::util::*;

const SECTOR: u64 = 4096;

/// One write the log replays: `data` at `offset`, or `zero` bytes of zeros.
#[derive(Clone, Debug)]
pub enum LogWrite {
    Data { offset: u64, data: Vec<u8> },
    Zero { offset: u64, length: u64 },
}

#[derive(Clone, Debug)]
pub struct LogEntry {
    pub pos: u64,
    pub length: u64,
    pub tail: u64,
    pub seq: u64,
    pub flushed_file_offset: u64,
    pub last_file_offset: u64,
    pub writes: Vec<LogWrite>,
}

#[derive(Clone, Debug, Default)]
pub struct Replay {
    pub entries: Vec<LogEntry>,
    pub writes: Vec<LogWrite>,
    /// The file must be at least this long after replay.
    pub last_file_offset: u64,
    pub flushed_file_offset: u64,
    /// Entries with a valid checksum found anywhere in the log, any GUID (for `info`).
    pub valid_entries_seen: u64,
    pub other_guid_entries: u64,
}

/// Reads `len` bytes of the circular log starting at log-relative `pos`.
fn read_circular(b: &dyn Backing, log_off: u64, log_len: u64, pos: u64, len: u64) -> Result<Vec<u8>> {
    let mut out = vec![0u8; len as usize];
    let mut done = 0u64;
    while done < len {
        let p = (pos + done) % log_len;
        let n = (log_len - p).min(len - done);
        b.read_at(&mut out[done as usize..(done + n) as usize], log_off + p)?;
        done += n;
    }
    Ok(out)
}

/// Parses the entry at `pos` if it is valid (signature, checksum, structure). `guid` filters.
fn parse_entry(b: &dyn Backing, log_off: u64, log_len: u64, pos: u64) -> Result<Option<(Guid, LogEntry)>> {
    let head = read_circular(b, log_off, log_len, pos, SECTOR)?;
    if &head[0..4] != b"loge" {
        return Ok(None);
    }
    let length = le32(&head, 8) as u64;
    let tail = le32(&head, 12) as u64;
    let seq = le64(&head, 16);
    let dcount = le32(&head, 24) as u64;
    let guid = Guid::from_bytes(&head[32..]);
    let flushed = le64(&head, 48);
    let last = le64(&head, 56);
    if length < SECTOR || length % SECTOR != 0 || length > log_len || tail % SECTOR != 0 || tail >= log_len || seq == 0 {
        return Ok(None);
    }
    let desc_sectors = (64 + 32 * dcount).div_ceil(SECTOR);
    if desc_sectors > length / SECTOR {
        return Ok(None);
    }
    let entry = read_circular(b, log_off, log_len, pos, length)?;
    if le32(&entry, 4) != crc32c_with_zero_field(&entry, 4) {
        return Ok(None);
    }
    let mut writes = Vec::with_capacity(dcount as usize);
    let mut data_sector = desc_sectors;
    for i in 0..dcount as usize {
        let d = &entry[64 + i * 32..64 + (i + 1) * 32];
        match &d[0..4] {
            b"zero" => {
                let zlen = le64(d, 8);
                let off = le64(d, 16);
                if le64(d, 24) != seq || zlen % SECTOR != 0 || off % SECTOR != 0 || off.checked_add(zlen).is_none() {
                    return Ok(None);
                }
                writes.push(LogWrite::Zero { offset: off, length: zlen });
            }
            b"desc" => {
                let trailing = le32(d, 4);
                let leading = le64(d, 8);
                let off = le64(d, 16);
                if le64(d, 24) != seq || off % SECTOR != 0 || off.checked_add(SECTOR).is_none() {
                    return Ok(None);
                }
                if (data_sector + 1) * SECTOR > length {
                    return Ok(None);
                }
                let s = &entry[(data_sector * SECTOR) as usize..((data_sector + 1) * SECTOR) as usize];
                if &s[0..4] != b"data" || le32(s, 4) != (seq >> 32) as u32 || le32(s, 4092) != seq as u32 {
                    return Ok(None);
                }
                let mut data = vec![0u8; SECTOR as usize];
                data[0..8].copy_from_slice(&leading.to_le_bytes());
                data[8..4092].copy_from_slice(&s[8..4092]);
                data[4092..4096].copy_from_slice(&trailing.to_le_bytes());
                writes.push(LogWrite::Data { offset: off, data });
                data_sector += 1;
            }
            _ => return Ok(None),
        }
    }
    Ok(Some((guid, LogEntry { pos, length, tail, seq, flushed_file_offset: flushed, last_file_offset: last, writes })))
}

/// Finds the active sequence for `guid` in the log at [log_off, log_off+log_len) and returns the
/// writes to replay, in order. `file_len` is the current file length (FlushedFileOffset check).
pub fn find_replay(b: &dyn Backing, log_off: u64, log_len: u64, guid: Guid, file_len: u64) -> Result<Replay> {
    let mut rep = Replay::default();
    if log_len == 0 {
        return corrupt("the header's LogGuid is set but the log is empty (LogLength 0)");
    }
    let mut found: Vec<LogEntry> = Vec::new();
    let mut pos = 0;
    while pos < log_len {
        if let Some((g, e)) = parse_entry(b, log_off, log_len, pos)? {
            rep.valid_entries_seen += 1;
            if g == guid {
                found.push(e);
            } else {
                rep.other_guid_entries += 1;
            }
        }
        pos += SECTOR;
    }
    let mut heads: Vec<usize> = (0..found.len()).collect();
    heads.sort_by(|a, b| found[*b].seq.cmp(&found[*a].seq));
    for h in heads {
        let head = &found[h];
        // walk from the head's tail forward to the head
        let mut seqv: Vec<usize> = Vec::new();
        let mut at = head.tail;
        let mut expect: Option<u64> = None;
        let mut ok = false;
        for _ in 0..=found.len() {
            let Some(i) = found.iter().position(|e| e.pos == at && expect.map_or(true, |s| e.seq == s)) else { break };
            seqv.push(i);
            if i == h {
                ok = true;
                break;
            }
            expect = Some(found[i].seq + 1);
            at = (at + found[i].length) % log_len;
        }
        if !ok {
            continue;
        }
        if head.flushed_file_offset > file_len {
            return corrupt(format!(
                "the active log sequence (head sequence {}) requires the file to be at least {:#x} bytes (FlushedFileOffset) but it is {:#x}: data the log depends on was lost",
                head.seq, head.flushed_file_offset, file_len
            ));
        }
        let limit = head.last_file_offset.max(file_len);
        for &i in &seqv {
            for w in &found[i].writes {
                let end = match w {
                    LogWrite::Data { offset, .. } => offset + SECTOR,
                    LogWrite::Zero { offset, length } => offset + length,
                };
                let start = match w {
                    LogWrite::Data { offset, .. } | LogWrite::Zero { offset, .. } => *offset,
                };
                if start < 192 * KIB || end > limit {
                    return corrupt(format!(
                        "log entry sequence {} writes [{start:#x}, {end:#x}) which is in the header area or beyond LastFileOffset {limit:#x}",
                        found[i].seq
                    ));
                }
            }
        }
        rep.last_file_offset = head.last_file_offset;
        rep.flushed_file_offset = head.flushed_file_offset;
        for &i in &seqv {
            rep.writes.extend(found[i].writes.iter().cloned());
        }
        rep.entries = seqv.iter().map(|&i| LogEntry { writes: Vec::new(), ..found[i].clone() }).collect();
        return Ok(rep);
    }
    corrupt(format!(
        "the header's LogGuid {guid} is set but the log holds no complete valid sequence of entries for it ({} entries with that GUID, {} with others)",
        found.len(),
        rep.other_guid_entries
    ))
}

/// Serializes one log entry (used by tests and the fuzzer to build images with a log).
pub fn build_entry(guid: Guid, seq: u64, tail: u32, flushed: u64, last: u64, writes: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let dcount = writes.len() as u64;
    let desc_sectors = (64 + 32 * dcount).div_ceil(SECTOR);
    let len = (desc_sectors + dcount) * SECTOR;
    let mut e = vec![0u8; len as usize];
    e[0..4].copy_from_slice(b"loge");
    put32(&mut e, 8, len as u32);
    put32(&mut e, 12, tail);
    put64(&mut e, 16, seq);
    put32(&mut e, 24, dcount as u32);
    e[32..48].copy_from_slice(&guid.0);
    put64(&mut e, 48, flushed);
    put64(&mut e, 56, last);
    for (i, (off, data)) in writes.iter().enumerate() {
        let d = 64 + i * 32;
        e[d..d + 4].copy_from_slice(b"desc");
        e[d + 4..d + 8].copy_from_slice(&data[4092..4096]);
        e[d + 8..d + 16].copy_from_slice(&data[0..8]);
        put64(&mut e, d + 16, *off);
        put64(&mut e, d + 24, seq);
        let s = ((desc_sectors + i as u64) * SECTOR) as usize;
        e[s..s + 4].copy_from_slice(b"data");
        put32(&mut e, s + 4, (seq >> 32) as u32);
        e[s + 8..s + 4092].copy_from_slice(&data[8..4092]);
        put32(&mut e, s + 4092, seq as u32);
    }
    let c = crc32c(&e);
    put32(&mut e, 4, c);
    e
}

/// Counts entries with a valid checksum anywhere in the log, whatever their GUID (for `info`
/// when the header's LogGuid is zero: such entries are stale and never replayed).
pub fn count_valid_entries(b: &dyn Backing, log_off: u64, log_len: u64) -> u64 {
    let mut n = 0;
    let mut pos = 0;
    while pos < log_len {
        if let Ok(Some(_)) = parse_entry(b, log_off, log_len, pos) {
            n += 1;
        }
        pos += SECTOR;
    }
    n
}
