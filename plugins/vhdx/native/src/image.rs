//! One VHDX file (a layer of a chain): parsing, log replay, the BAT and sector bitmaps, writes.
//!
//! Crash safety of writes (see README): no VHDX log is written. Metadata changes reach the file
//! only in `flush_metadata`, in the order (1) fsync the payload data and any file extension,
//! (2) write sector bitmaps, (3) write BAT sectors, (4) fsync. New blocks are always allocated
//! past the current end of the file, so a BAT entry on disk only ever points to data that is
//! already durable, and every intermediate state is a valid VHDX. Headers are updated by
//! writing the inactive copy with a higher sequence number, fsync, then the other copy.
use crate::backing::{Backing, FileBacking};
use crate::error::{corrupt, Error, Kind, Result};
use crate::format::*;
use crate::log::{find_replay, LogWrite, Replay};
use crate::util::*;
use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;

/// What a range of one layer resolves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Src {
    /// Stored in this file at the given file offset.
    Data(u64),
    /// Reads zeros, whatever the parent holds.
    Zero,
    /// Not defined here: read the parent (zeros without one).
    Parent,
}

pub struct LayerState {
    pub header: Header,
    pub bat: Vec<u64>,
    /// Sector bitmap bytes of each PARTIALLY_PRESENT payload block (differencing disks).
    pub bitmaps: HashMap<u64, Vec<u8>>,
    dirty_bat: BTreeSet<usize>,
    dirty_bitmaps: BTreeSet<u64>,
    pub file_end: u64,
    header_bumped: bool,
    unsynced: bool,
    pub data_write_guid_override: Option<Guid>,
}

pub struct Layer {
    pub path: String,
    pub backing: Box<dyn Backing>,
    pub writable: bool,
    pub headers: [std::result::Result<Header, String>; 2],
    pub current_header: usize,
    pub regions: Vec<RegionEntry>,
    pub region_table_used: usize,
    pub region_table_errors: Vec<String>,
    pub bat_region: RegionEntry,
    pub metadata_region: RegionEntry,
    pub md: Metadata,
    pub geo: Geometry,
    pub replay: Option<Replay>,
    pub replay_in_memory: bool,
    /// Valid log entries found while the header's LogGuid is zero (stale, not replayed).
    pub stale_log_entries: u64,
    overlay: Vec<LogWrite>,
    real_len: u64,
    logical_len: u64,
    pub state: RwLock<LayerState>,
}

const MAX_METADATA_REGION: u64 = 16 * MIB;
const DIRTY_LIMIT: usize = 16384;

pub fn bat_offset(e: u64) -> u64 {
    (e >> 20) << 20
}
pub fn bat_state(e: u64) -> u8 {
    (e & 7) as u8
}

impl Layer {
    pub fn open_file(path: &str, writable: bool) -> Result<Layer> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| Error::io(&format!("{path}: cannot open"), e))?;
        if writable {
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::new(
                        Kind::Busy,
                        format!("{path}: another handle has this file open for writing (advisory lock held); close it first"),
                    ))
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&format!("{path}: lock"), e)),
            }
        }
        Layer::open(path.to_string(), Box::new(FileBacking { file }), writable).map_err(|e| e.at(path))
    }

    pub fn open(path: String, backing: Box<dyn Backing>, writable: bool) -> Result<Layer> {
        let real_len = backing.len()?;
        if real_len < MIB {
            return corrupt(format!("the file is {real_len} bytes, too small to be a VHDX (at least 1 MiB)"));
        }
        let mut sig = [0u8; 8];
        backing.read_at(&mut sig, 0)?;
        if &sig != SIG_FILE {
            return corrupt("not a VHDX file: the file type identifier at offset 0 is not \"vhdxfile\"");
        }
        let mut hb = vec![0u8; HEADER_SIZE];
        backing.read_at(&mut hb, HEADER1_OFF)?;
        let h1 = Header::parse(&hb);
        let h1raw = hb.clone();
        backing.read_at(&mut hb, HEADER2_OFF)?;
        let h2 = Header::parse(&hb);
        let current = match (&h1, &h2) {
            (Ok(a), Ok(b)) => {
                if a.seq > b.seq {
                    0
                } else if b.seq > a.seq {
                    1
                } else if h1raw == hb {
                    0
                } else {
                    return corrupt(format!(
                        "both headers are valid with the same sequence number {} but differ: cannot tell which is current",
                        a.seq
                    ));
                }
            }
            (Ok(_), Err(_)) => 0,
            (Err(_), Ok(_)) => 1,
            (Err(a), Err(b)) => return corrupt(format!("no valid header: header 1 (offset 0x10000): {a}; header 2 (offset 0x20000): {b}")),
        };
        let header = if current == 0 { h1.clone().unwrap() } else { h2.clone().unwrap() };

        let mut layer = Layer {
            path,
            backing,
            writable,
            headers: [h1, h2],
            current_header: current,
            regions: Vec::new(),
            region_table_used: 0,
            region_table_errors: Vec::new(),
            bat_region: RegionEntry { guid: BAT_GUID, offset: 0, length: 0, required: true },
            metadata_region: RegionEntry { guid: METADATA_GUID, offset: 0, length: 0, required: true },
            md: Metadata {
                block_size: 0,
                leave_block_allocated: false,
                has_parent: false,
                virtual_size: 0,
                disk_id: Guid::ZERO,
                logical_sector_size: 512,
                physical_sector_size: 512,
                parent_locator: None,
                entries: Vec::new(),
            },
            geo: Geometry::new(MIB, 512, MIB, false),
            replay: None,
            replay_in_memory: false,
            stale_log_entries: 0,
            overlay: Vec::new(),
            real_len,
            logical_len: real_len,
            state: RwLock::new(LayerState {
                header: header.clone(),
                bat: Vec::new(),
                bitmaps: HashMap::new(),
                dirty_bat: BTreeSet::new(),
                dirty_bitmaps: BTreeSet::new(),
                file_end: 0,
                header_bumped: false,
                unsynced: false,
                data_write_guid_override: None,
            }),
        };

        // ---- log replay, before anything else is read -------------------------------------
        let mut must_clear_log = false;
        if !header.log_guid.is_zero() {
            let end = header.log_offset.checked_add(header.log_length as u64);
            if end.map_or(true, |e| e > real_len) {
                return corrupt(format!(
                    "the log region at {:#x} (length {:#x}) lies outside the file ({real_len:#x} bytes)",
                    header.log_offset, header.log_length
                ));
            }
            let rep = find_replay(&*layer.backing, header.log_offset, header.log_length as u64, header.log_guid, real_len)?;
            if writable {
                for w in &rep.writes {
                    match w {
                        LogWrite::Data { offset, data } => layer.backing.write_at(data, *offset)?,
                        LogWrite::Zero { offset, length } => {
                            let z = vec![0u8; MIB as usize];
                            let mut done = 0;
                            while done < *length {
                                let n = (length - done).min(MIB);
                                layer.backing.write_at(&z[..n as usize], offset + done)?;
                                done += n;
                            }
                        }
                    }
                }
                if layer.backing.len()? < rep.last_file_offset {
                    layer.backing.set_len(rep.last_file_offset)?;
                }
                layer.backing.sync()?;
                layer.real_len = layer.backing.len()?;
                layer.logical_len = layer.real_len;
                must_clear_log = true;
            } else {
                layer.overlay = rep.writes.clone();
                layer.logical_len = real_len.max(rep.last_file_offset);
                layer.replay_in_memory = true;
            }
            layer.replay = Some(rep);
        } else if header.log_length > 0 && header.log_offset.checked_add(header.log_length as u64).map_or(false, |e| e <= real_len) {
            layer.stale_log_entries = crate::log::count_valid_entries(&*layer.backing, header.log_offset, header.log_length as u64);
        }

        // ---- region table -------------------------------------------------------------------
        let mut rb = vec![0u8; REGION_TABLE_SIZE];
        let mut regions = None;
        for (i, off) in [REGION1_OFF, REGION2_OFF].iter().enumerate() {
            layer.raw_read(*off, &mut rb)?;
            match parse_region_table(&rb) {
                Ok(r) => {
                    regions = Some(r);
                    layer.region_table_used = i;
                    break;
                }
                Err(e) => layer.region_table_errors.push(format!("region table {} (offset {off:#x}): {e}", i + 1)),
            }
        }
        let Some(regions) = regions else {
            return corrupt(format!("no valid region table: {}", layer.region_table_errors.join("; ")));
        };
        let mut bat = None;
        let mut meta = None;
        for r in &regions {
            let end = r.offset.checked_add(r.length as u64);
            if r.offset < MIB || r.offset % MIB != 0 || r.length as u64 % MIB != 0 || r.length == 0 || end.map_or(true, |e| e > layer.logical_len) {
                return corrupt(format!(
                    "region {} ({}) at {:#x} length {:#x} is not 1 MiB-aligned, overlaps the header area or lies outside the file ({:#x} bytes)",
                    r.guid,
                    region_name(&r.guid),
                    r.offset,
                    r.length,
                    layer.logical_len
                ));
            }
            for o in &regions {
                if !std::ptr::eq(o, r) && o.offset < r.offset + r.length as u64 && r.offset < o.offset + o.length as u64 {
                    return corrupt(format!("regions {} and {} overlap", r.guid, o.guid));
                }
            }
            if r.guid == BAT_GUID {
                if bat.replace(r.clone()).is_some() {
                    return corrupt("the region table lists the BAT twice");
                }
            } else if r.guid == METADATA_GUID {
                if meta.replace(r.clone()).is_some() {
                    return corrupt("the region table lists the metadata region twice");
                }
            } else if r.required {
                return Err(Error::new(
                    Kind::Unsupported,
                    format!("the region table lists an unknown region {} marked required; this implementation cannot open the file safely", r.guid),
                ));
            }
        }
        layer.bat_region = bat.ok_or_else(|| Error::corrupt("the region table has no BAT region"))?;
        layer.metadata_region = meta.ok_or_else(|| Error::corrupt("the region table has no metadata region"))?;
        layer.regions = regions;
        if !header.log_guid.is_zero() || header.log_length > 0 {
            let (lo, ll) = (header.log_offset, header.log_length as u64);
            for r in &layer.regions {
                if ll > 0 && lo < r.offset + r.length as u64 && r.offset < lo + ll {
                    return corrupt(format!("the log ({lo:#x}+{ll:#x}) overlaps region {}", r.guid));
                }
            }
        }

        // ---- metadata ------------------------------------------------------------------------
        let mlen = layer.metadata_region.length as u64;
        if mlen > MAX_METADATA_REGION || mlen < METADATA_TABLE_SIZE as u64 {
            return corrupt(format!("metadata region length {mlen:#x} is outside 64 KiB..16 MiB"));
        }
        let mut mb = vec![0u8; mlen as usize];
        layer.raw_read(layer.metadata_region.offset, &mut mb)?;
        layer.md = parse_metadata(&mb)?;
        layer.geo = Geometry::new(
            layer.md.block_size as u64,
            layer.md.logical_sector_size as u64,
            layer.md.virtual_size,
            layer.md.has_parent,
        );

        // ---- BAT -----------------------------------------------------------------------------
        let geo = layer.geo;
        let need = geo.bat_entries * 8;
        if (layer.bat_region.length as u64) < need {
            return corrupt(format!(
                "the BAT region is {:#x} bytes but {} entries ({need:#x} bytes) are needed for a {}-byte disk with {}-byte blocks",
                layer.bat_region.length, geo.bat_entries, layer.md.virtual_size, geo.block_size
            ));
        }
        // Keep entries for every sector bitmap slot when the BAT region holds them (writers need them).
        let keep = if layer.bat_region.length as u64 >= geo.full_bat_entries() * 8 { geo.full_bat_entries() } else { geo.bat_entries };
        let mut raw = vec![0u8; (keep * 8) as usize];
        layer.raw_read(layer.bat_region.offset, &mut raw)?;
        let mut batv: Vec<u64> = raw.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        drop(raw);
        let mut max_end = layer.regions.iter().map(|r| r.offset + r.length as u64).max().unwrap_or(0);
        max_end = max_end.max(header.log_offset + header.log_length as u64);
        for b in 0..geo.data_blocks {
            let i = geo.payload_index(b);
            let e = batv[i];
            let s = bat_state(e);
            match s {
                PB_NOT_PRESENT | PB_UNDEFINED | PB_ZERO | PB_UNMAPPED | PB_UNMAPPED_V095 => {}
                PB_FULLY_PRESENT | PB_PARTIALLY_PRESENT => {
                    let off = bat_offset(e);
                    if off < MIB {
                        return corrupt(format!("BAT entry {i} (payload block {b}) is {} at file offset {off:#x}, inside the header area", payload_state_name(s)));
                    }
                    let end = off.checked_add(geo.block_size).ok_or_else(|| Error::corrupt(format!("BAT entry {i} offset overflows")))?;
                    if s == PB_PARTIALLY_PRESENT && !layer.md.has_parent {
                        return corrupt(format!("BAT entry {i} (payload block {b}) is PARTIALLY_PRESENT in a disk without a parent"));
                    }
                    max_end = max_end.max(end);
                }
                _ => return corrupt(format!("BAT entry {i} (payload block {b}) has the reserved state {s}")),
            }
        }
        if layer.md.has_parent {
            for c in 0..geo.bitmap_blocks {
                let i = geo.bitmap_index(c);
                let e = batv[i];
                match bat_state(e) {
                    SB_NOT_PRESENT => {}
                    SB_PRESENT => {
                        let off = bat_offset(e);
                        if off < MIB {
                            return corrupt(format!("BAT entry {i} (sector bitmap block {c}) points inside the header area ({off:#x})"));
                        }
                        max_end = max_end.max(off + MIB);
                    }
                    s => return corrupt(format!("BAT entry {i} (sector bitmap block {c}) has the invalid state {s}")),
                }
            }
        } else {
            // sector bitmap entries are meaningless without a parent; normalize for writers
            for c in 0..geo.bitmap_blocks {
                let i = geo.bitmap_index(c);
                if i < batv.len() && bat_state(batv[i]) != SB_NOT_PRESENT && bat_state(batv[i]) != SB_PRESENT {
                    batv[i] = 0;
                }
            }
        }
        // ---- sector bitmaps of partially present blocks ---------------------------------------
        let mut bitmaps = HashMap::new();
        if layer.md.has_parent {
            let bpb = geo.bitmap_bytes_per_block();
            for b in 0..geo.data_blocks {
                if bat_state(batv[geo.payload_index(b)]) != PB_PARTIALLY_PRESENT {
                    continue;
                }
                let c = b / geo.chunk_ratio;
                let se = batv[geo.bitmap_index(c)];
                if bat_state(se) != SB_PRESENT {
                    return corrupt(format!(
                        "payload block {b} is PARTIALLY_PRESENT but the sector bitmap block {c} it needs is not present (BAT entry {})",
                        geo.bitmap_index(c)
                    ));
                }
                let mut v = vec![0u8; bpb as usize];
                layer.raw_read(bat_offset(se) + (b % geo.chunk_ratio) * bpb, &mut v)?;
                bitmaps.insert(b, v);
            }
        }
        {
            let st = layer.state.get_mut().unwrap();
            st.bat = batv;
            st.bitmaps = bitmaps;
            st.file_end = round_up(max_end.max(layer.logical_len), MIB);
        }
        if must_clear_log {
            let keep_data_guid = false;
            layer.bump_header(&mut layer.state.write().unwrap(), keep_data_guid)?;
        }
        Ok(layer)
    }

    /// Reads file bytes, with the in-memory log replay applied on top (read-only opens).
    pub fn raw_read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        if self.overlay.is_empty() {
            return self.backing.read_at(buf, off);
        }
        let len = buf.len() as u64;
        let end = off.checked_add(len).ok_or_else(|| Error::corrupt("file offset overflows"))?;
        if end > self.logical_len {
            return corrupt(format!("read of {len} bytes at {off:#x} goes past the end of the file after log replay ({:#x})", self.logical_len));
        }
        if off < self.real_len {
            let n = (self.real_len - off).min(len) as usize;
            self.backing.read_at(&mut buf[..n], off)?;
            buf[n..].fill(0);
        } else {
            buf.fill(0);
        }
        for w in &self.overlay {
            let (wo, wl) = match w {
                LogWrite::Data { offset, data } => (*offset, data.len() as u64),
                LogWrite::Zero { offset, length } => (*offset, *length),
            };
            let s = wo.max(off);
            let e = (wo + wl).min(end);
            if s >= e {
                continue;
            }
            let dst = &mut buf[(s - off) as usize..(e - off) as usize];
            match w {
                LogWrite::Data { data, .. } => dst.copy_from_slice(&data[(s - wo) as usize..(e - wo) as usize]),
                LogWrite::Zero { .. } => dst.fill(0),
            }
        }
        Ok(())
    }

    pub fn is_fixed(&self) -> bool {
        self.md.leave_block_allocated && !self.md.has_parent
    }

    pub fn kind_name(&self) -> &'static str {
        if self.md.has_parent {
            "differencing"
        } else if self.md.leave_block_allocated {
            "fixed"
        } else {
            "dynamic"
        }
    }

    /// Resolves [in_off, in_off+len) of payload block `block` into runs of this layer.
    pub fn block_runs(&self, st: &LayerState, block: u64, in_off: u64, len: u64, out: &mut Vec<(u64, Src)>) {
        let e = st.bat[self.geo.payload_index(block)];
        let s = bat_state(e);
        let has_parent = self.md.has_parent;
        match s {
            PB_FULLY_PRESENT => out.push((len, Src::Data(bat_offset(e) + in_off))),
            PB_ZERO | PB_UNMAPPED | PB_UNMAPPED_V095 => out.push((len, Src::Zero)),
            PB_NOT_PRESENT | PB_UNDEFINED => out.push((len, if has_parent { Src::Parent } else { Src::Zero })),
            PB_PARTIALLY_PRESENT => {
                let bm = match st.bitmaps.get(&block) {
                    Some(b) => b,
                    None => {
                        out.push((len, Src::Parent));
                        return;
                    }
                };
                let ss = self.geo.sector_size;
                let base = bat_offset(e);
                let mut pos = in_off;
                let end = in_off + len;
                while pos < end {
                    let sec = pos / ss;
                    let bit = bm[(sec / 8) as usize] >> (sec % 8) & 1;
                    // extend the run while the bit stays the same
                    let mut nsec = sec + 1;
                    let total = self.geo.block_size / ss;
                    while nsec < total && nsec * ss < end {
                        let byte = bm[(nsec / 8) as usize];
                        if nsec % 8 == 0 && (byte == 0 || byte == 0xff) && (byte & 1) == bit {
                            nsec += 8;
                            continue;
                        }
                        if (byte >> (nsec % 8) & 1) != bit {
                            break;
                        }
                        nsec += 1;
                    }
                    let run_end = (nsec * ss).min(end);
                    let n = run_end - pos;
                    out.push((n, if bit == 1 { Src::Data(base + pos) } else { Src::Parent }));
                    pos = run_end;
                }
            }
            _ => out.push((len, Src::Zero)),
        }
    }

    // ---------------------------------------------------------------------------------------
    // writing
    // ---------------------------------------------------------------------------------------

    fn check_writable(&self) -> Result<()> {
        if !self.writable {
            return Err(Error::invalid(format!("{}: the disk is open read-only; open it with writable: true to write", self.path)));
        }
        Ok(())
    }

    /// Writes a new header into both slots (inactive first), each followed by fsync.
    pub fn bump_header(&self, st: &mut LayerState, keep_data_guid: bool) -> Result<()> {
        self.check_writable()?;
        let mut h = st.header.clone();
        h.file_write_guid = Guid::random();
        if !keep_data_guid {
            h.data_write_guid = st.data_write_guid_override.unwrap_or_else(Guid::random);
        }
        h.log_guid = Guid::ZERO;
        let cur = self.current_header_slot(st);
        for slot in [1 - cur, cur] {
            h.seq += 1;
            let off = if slot == 0 { HEADER1_OFF } else { HEADER2_OFF };
            self.backing.write_at(&h.serialize(), off)?;
            self.backing.sync()?;
        }
        st.header = h;
        st.header_bumped = true;
        Ok(())
    }

    fn current_header_slot(&self, _st: &LayerState) -> usize {
        self.current_header
    }

    fn before_data_change(&self, st: &mut LayerState) -> Result<()> {
        self.check_writable()?;
        if !st.header_bumped {
            self.bump_header(st, false)?;
        } else if let Some(g) = st.data_write_guid_override {
            if st.header.data_write_guid != g {
                self.bump_header(st, false)?;
            }
        }
        Ok(())
    }

    fn allocate(&self, st: &mut LayerState, size: u64) -> Result<u64> {
        let off = st.file_end;
        let end = off.checked_add(size).ok_or_else(|| Error::invalid("file would grow beyond 2^64 bytes"))?;
        if (off >> 20) >= (1u64 << 44) {
            return Err(Error::invalid("file offset beyond what a BAT entry can address"));
        }
        self.backing.set_len(end)?;
        st.file_end = end;
        Ok(off)
    }

    fn ensure_bitmap_block(&self, st: &mut LayerState, chunk: u64) -> Result<u64> {
        let si = self.geo.bitmap_index(chunk);
        if si >= st.bat.len() {
            return corrupt(format!("the BAT has no entry for sector bitmap block {chunk}"));
        }
        if bat_state(st.bat[si]) == SB_PRESENT {
            return Ok(bat_offset(st.bat[si]));
        }
        let off = self.allocate(st, MIB)?;
        st.bat[si] = off | SB_PRESENT as u64;
        st.dirty_bat.insert(si);
        Ok(off)
    }

    /// Writes sector-aligned `data` at virtual offset `off` of this layer.
    pub fn write_aligned(&self, st: &mut LayerState, off: u64, data: &[u8]) -> Result<()> {
        let ss = self.geo.sector_size;
        if off % ss != 0 || data.len() as u64 % ss != 0 {
            return Err(Error::invalid("internal: unaligned write reached the layer"));
        }
        if off.checked_add(data.len() as u64).map_or(true, |e| e > self.md.virtual_size) {
            return Err(Error::invalid(format!(
                "write of {} bytes at {off} goes past the end of the virtual disk ({} bytes)",
                data.len(),
                self.md.virtual_size
            )));
        }
        if data.is_empty() {
            return Ok(());
        }
        self.before_data_change(st)?;
        let bs = self.geo.block_size;
        let mut pos = 0u64;
        let len = data.len() as u64;
        while pos < len {
            let v = off + pos;
            let block = v / bs;
            let in_off = v % bs;
            let n = (bs - in_off).min(len - pos);
            let piece = &data[pos as usize..(pos + n) as usize];
            let idx = self.geo.payload_index(block);
            let e = st.bat[idx];
            match bat_state(e) {
                PB_FULLY_PRESENT => self.backing.write_at(piece, bat_offset(e) + in_off)?,
                PB_PARTIALLY_PRESENT => {
                    self.backing.write_at(piece, bat_offset(e) + in_off)?;
                    if let Some(bm) = st.bitmaps.get_mut(&block) {
                        set_bits(bm, in_off / ss, n / ss);
                    }
                    st.dirty_bitmaps.insert(block);
                }
                s => {
                    let zero_semantics = !self.md.has_parent || matches!(s, PB_ZERO | PB_UNMAPPED | PB_UNMAPPED_V095);
                    let full = in_off == 0 && n == bs;
                    let new_state = if zero_semantics || full { PB_FULLY_PRESENT } else { PB_PARTIALLY_PRESENT };
                    if new_state == PB_PARTIALLY_PRESENT {
                        self.ensure_bitmap_block(st, block / self.geo.chunk_ratio)?;
                    }
                    let fo = self.allocate(st, bs)?;
                    self.backing.write_at(piece, fo + in_off)?;
                    if new_state == PB_PARTIALLY_PRESENT {
                        let mut bm = vec![0u8; self.geo.bitmap_bytes_per_block() as usize];
                        set_bits(&mut bm, in_off / ss, n / ss);
                        st.bitmaps.insert(block, bm);
                        st.dirty_bitmaps.insert(block);
                    }
                    st.bat[idx] = fo | new_state as u64;
                    st.dirty_bat.insert(idx);
                }
            }
            pos += n;
        }
        st.unsynced = true;
        if st.dirty_bat.len() + st.dirty_bitmaps.len() > DIRTY_LIMIT {
            self.flush_metadata(st)?;
        }
        Ok(())
    }

    /// Makes [off, off+len) read zeros: whole blocks become ZERO (unless the disk is fixed),
    /// the rest is written with zeros.
    pub fn write_zeroes(&self, st: &mut LayerState, off: u64, len: u64) -> Result<()> {
        let bs = self.geo.block_size;
        let zeros = vec![0u8; (4 * MIB).min(bs) as usize];
        let mut pos = off;
        let end = off + len;
        self.before_data_change(st)?;
        while pos < end {
            let in_off = pos % bs;
            let n = (bs - in_off).min(end - pos);
            let block = pos / bs;
            if in_off == 0 && n == bs && !self.is_fixed() {
                let idx = self.geo.payload_index(block);
                st.bat[idx] = PB_ZERO as u64;
                st.bitmaps.remove(&block);
                st.dirty_bitmaps.remove(&block);
                st.dirty_bat.insert(idx);
            } else {
                let mut done = 0;
                while done < n {
                    let k = (n - done).min(zeros.len() as u64);
                    self.write_aligned(st, pos + done, &zeros[..k as usize])?;
                    done += k;
                }
            }
            pos += n;
        }
        st.unsynced = true;
        Ok(())
    }

    /// Persists BAT and sector-bitmap changes in crash-safe order (see the module comment).
    pub fn flush_metadata(&self, st: &mut LayerState) -> Result<()> {
        if st.dirty_bat.is_empty() && st.dirty_bitmaps.is_empty() {
            if st.unsynced {
                self.backing.sync()?;
                st.unsynced = false;
            }
            return Ok(());
        }
        self.backing.sync()?;
        let bpb = self.geo.bitmap_bytes_per_block();
        let dirty_bm: Vec<u64> = st.dirty_bitmaps.iter().copied().collect();
        for b in dirty_bm {
            let Some(bm) = st.bitmaps.get(&b) else { continue };
            let se = st.bat[self.geo.bitmap_index(b / self.geo.chunk_ratio)];
            if bat_state(se) != SB_PRESENT {
                continue;
            }
            self.backing.write_at(bm, bat_offset(se) + (b % self.geo.chunk_ratio) * bpb)?;
        }
        // BAT: whole 4 KiB sectors from memory, coalesced
        let per = 512usize;
        let sectors: BTreeSet<usize> = st.dirty_bat.iter().map(|i| i / per).collect();
        let sectors: Vec<usize> = sectors.into_iter().collect();
        let mut i = 0;
        while i < sectors.len() {
            let mut j = i;
            while j + 1 < sectors.len() && sectors[j + 1] == sectors[j] + 1 && j - i < 255 {
                j += 1;
            }
            let first = sectors[i] * per;
            let last = ((sectors[j] + 1) * per).min(st.bat.len());
            let mut buf = Vec::with_capacity((last - first) * 8);
            for e in &st.bat[first..last] {
                buf.extend_from_slice(&e.to_le_bytes());
            }
            self.backing.write_at(&buf, self.bat_region.offset + first as u64 * 8)?;
            i = j + 1;
        }
        self.backing.sync()?;
        st.dirty_bat.clear();
        st.dirty_bitmaps.clear();
        st.unsynced = false;
        Ok(())
    }

    /// Replaces the parent locator: the new item is written to free space in the metadata
    /// region and fsynced, then the one table entry is switched over (a single sector write).
    pub fn rewrite_parent_locator(&self, pl: &ParentLocator) -> Result<()> {
        self.check_writable()?;
        let mut st = self.state.write().unwrap();
        if !st.header_bumped {
            self.bump_header(&mut st, true)?;
        }
        let bytes = pl.serialize();
        let mlen = self.metadata_region.length as u64;
        let idx = self
            .md
            .entries
            .iter()
            .position(|e| e.item == MD_PARENT_LOCATOR && !e.is_user)
            .ok_or_else(|| Error::corrupt("the disk has no parent locator to update"))?;
        // current on-disk entry (table may have changed since open only through us)
        let mut table = vec![0u8; METADATA_TABLE_SIZE];
        self.backing.read_at(&mut table, self.metadata_region.offset)?;
        let entries = parse_metadata_table(&table, mlen)?;
        let cur = &entries[idx];
        let max_end = entries.iter().map(|e| e.offset as u64 + e.length as u64).max().unwrap_or(METADATA_TABLE_SIZE as u64);
        let mut new_off = round_up(max_end.max(METADATA_TABLE_SIZE as u64), 4096);
        if new_off + bytes.len() as u64 > mlen {
            // wrap to the first gap after the table that does not overlap any live item
            new_off = METADATA_TABLE_SIZE as u64;
            loop {
                let clash = entries.iter().find(|e| e.length > 0 && (e.offset as u64) < new_off + bytes.len() as u64 && new_off < e.offset as u64 + e.length as u64);
                match clash {
                    None => break,
                    Some(e) => new_off = round_up(e.offset as u64 + e.length as u64, 4096),
                }
                if new_off + bytes.len() as u64 > mlen {
                    return Err(Error::new(Kind::Unsupported, "no free space in the metadata region for a new parent locator"));
                }
            }
        }
        self.backing.write_at(&bytes, self.metadata_region.offset + new_off)?;
        self.backing.sync()?;
        let mut ent = [0u8; 32];
        ent[..16].copy_from_slice(&cur.item.0);
        put32(&mut ent, 16, new_off as u32);
        put32(&mut ent, 20, bytes.len() as u32);
        put32(&mut ent, 24, (cur.is_user as u32) | ((cur.is_virtual_disk as u32) << 1) | ((cur.is_required as u32) << 2));
        self.backing.write_at(&ent, self.metadata_region.offset + 32 + idx as u64 * 32)?;
        self.backing.sync()?;
        Ok(())
    }
}

pub fn set_bits(bm: &mut [u8], first: u64, count: u64) {
    let mut s = first;
    let end = first + count;
    while s < end {
        if s % 8 == 0 && end - s >= 8 {
            bm[(s / 8) as usize] = 0xff;
            s += 8;
        } else {
            bm[(s / 8) as usize] |= 1 << (s % 8);
            s += 1;
        }
    }
}
