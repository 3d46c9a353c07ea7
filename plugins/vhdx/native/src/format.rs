//! On-disk structures of MS-VHDX: file identifier, headers, region table, metadata, parent locator.
use crate::error::{corrupt, Error, Result};
use crate::util::*;

pub const HEADER1_OFF: u64 = 64 * KIB;
pub const HEADER2_OFF: u64 = 128 * KIB;
pub const REGION1_OFF: u64 = 192 * KIB;
pub const REGION2_OFF: u64 = 256 * KIB;
pub const HEADER_SIZE: usize = 4096;
pub const REGION_TABLE_SIZE: usize = 64 * 1024;
pub const METADATA_TABLE_SIZE: usize = 64 * 1024;

pub const SIG_FILE: &[u8; 8] = b"vhdxfile";
pub const SIG_HEAD: &[u8; 4] = b"head";
pub const SIG_REGI: &[u8; 4] = b"regi";
pub const SIG_METADATA: &[u8; 8] = b"metadata";

pub const BAT_GUID: Guid = Guid::from_fields(0x2DC27766, 0xF623, 0x4200, [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08]);
pub const METADATA_GUID: Guid = Guid::from_fields(0x8B7CA206, 0x4790, 0x4B9A, [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E]);

pub const MD_FILE_PARAMS: Guid = Guid::from_fields(0xCAA16737, 0xFA36, 0x4D43, [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B]);
pub const MD_VIRTUAL_SIZE: Guid = Guid::from_fields(0x2FA54224, 0xCD1B, 0x4876, [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8]);
pub const MD_DISK_ID: Guid = Guid::from_fields(0xBECA12AB, 0xB2E6, 0x4523, [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46]);
pub const MD_LOGICAL_SECTOR: Guid = Guid::from_fields(0x8141BF1D, 0xA96F, 0x4709, [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F]);
pub const MD_PHYSICAL_SECTOR: Guid = Guid::from_fields(0xCDA348C7, 0x445D, 0x4471, [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56]);
pub const MD_PARENT_LOCATOR: Guid = Guid::from_fields(0xA8D35F2D, 0xB30B, 0x454D, [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C]);
pub const LOCATOR_TYPE_VHDX: Guid = Guid::from_fields(0xB04AEFB7, 0xD19E, 0x4A81, [0xB7, 0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59, 0x13]);

pub const MAX_VIRTUAL_SIZE: u64 = 64 * 1024 * 1024 * MIB; // 64 TiB

// payload block states (MS-VHDX 2.5.1.1)
pub const PB_NOT_PRESENT: u8 = 0;
pub const PB_UNDEFINED: u8 = 1;
pub const PB_ZERO: u8 = 2;
pub const PB_UNMAPPED: u8 = 3;
pub const PB_UNMAPPED_V095: u8 = 5; // reserved value older writers used for UNMAPPED
pub const PB_FULLY_PRESENT: u8 = 6;
pub const PB_PARTIALLY_PRESENT: u8 = 7;
pub const SB_NOT_PRESENT: u8 = 0;
pub const SB_PRESENT: u8 = 6;

pub fn payload_state_name(s: u8) -> &'static str {
    match s {
        0 => "NOT_PRESENT",
        1 => "UNDEFINED",
        2 => "ZERO",
        3 => "UNMAPPED",
        5 => "UNMAPPED_V095",
        6 => "FULLY_PRESENT",
        7 => "PARTIALLY_PRESENT",
        _ => "INVALID",
    }
}
pub fn sb_state_name(s: u8) -> &'static str {
    match s {
        0 => "SB_BLOCK_NOT_PRESENT",
        6 => "SB_BLOCK_PRESENT",
        _ => "INVALID",
    }
}

#[derive(Clone, Debug)]
pub struct Header {
    pub seq: u64,
    pub file_write_guid: Guid,
    pub data_write_guid: Guid,
    pub log_guid: Guid,
    pub log_version: u16,
    pub version: u16,
    pub log_length: u32,
    pub log_offset: u64,
    pub checksum: u32,
}

impl Header {
    pub fn parse(b: &[u8]) -> std::result::Result<Header, String> {
        if &b[0..4] != SIG_HEAD {
            return Err("signature is not \"head\"".into());
        }
        let stored = le32(b, 4);
        let calc = crc32c_with_zero_field(&b[..HEADER_SIZE], 4);
        if stored != calc {
            return Err(format!("checksum {stored:#010x} does not match the computed CRC-32C {calc:#010x}"));
        }
        let h = Header {
            seq: le64(b, 8),
            file_write_guid: Guid::from_bytes(&b[16..]),
            data_write_guid: Guid::from_bytes(&b[32..]),
            log_guid: Guid::from_bytes(&b[48..]),
            log_version: le16(b, 64),
            version: le16(b, 66),
            log_length: le32(b, 68),
            log_offset: le64(b, 72),
            checksum: stored,
        };
        if h.version != 1 {
            return Err(format!("version {} is not 1", h.version));
        }
        if h.log_version != 0 {
            return Err(format!("log version {} is not 0", h.log_version));
        }
        if h.log_length as u64 % MIB != 0 || h.log_offset % MIB != 0 || (h.log_length > 0 && h.log_offset < MIB) {
            return Err(format!(
                "log location offset {:#x} length {:#x} is not 1 MiB-aligned or overlaps the header area",
                h.log_offset, h.log_length
            ));
        }
        Ok(h)
    }
    pub fn serialize(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(SIG_HEAD);
        put64(&mut b, 8, self.seq);
        b[16..32].copy_from_slice(&self.file_write_guid.0);
        b[32..48].copy_from_slice(&self.data_write_guid.0);
        b[48..64].copy_from_slice(&self.log_guid.0);
        put16(&mut b, 64, self.log_version);
        put16(&mut b, 66, self.version);
        put32(&mut b, 68, self.log_length);
        put64(&mut b, 72, self.log_offset);
        let c = crc32c(&b);
        put32(&mut b, 4, c);
        b
    }
}

#[derive(Clone, Debug)]
pub struct RegionEntry {
    pub guid: Guid,
    pub offset: u64,
    pub length: u32,
    pub required: bool,
}

pub fn region_name(g: &Guid) -> &'static str {
    if *g == BAT_GUID {
        "BAT"
    } else if *g == METADATA_GUID {
        "Metadata"
    } else {
        "unknown"
    }
}

pub fn parse_region_table(b: &[u8]) -> std::result::Result<Vec<RegionEntry>, String> {
    if &b[0..4] != SIG_REGI {
        return Err("signature is not \"regi\"".into());
    }
    let stored = le32(b, 4);
    let calc = crc32c_with_zero_field(&b[..REGION_TABLE_SIZE], 4);
    if stored != calc {
        return Err(format!("checksum {stored:#010x} does not match the computed CRC-32C {calc:#010x}"));
    }
    let count = le32(b, 8);
    if count > 2047 {
        return Err(format!("entry count {count} exceeds 2047"));
    }
    let mut v = Vec::new();
    for i in 0..count as usize {
        let e = &b[16 + i * 32..16 + (i + 1) * 32];
        let r = RegionEntry {
            guid: Guid::from_bytes(e),
            offset: le64(e, 16),
            length: le32(e, 24),
            required: le32(e, 28) & 1 != 0,
        };
        v.push(r);
    }
    Ok(v)
}

pub fn serialize_region_table(entries: &[RegionEntry]) -> Vec<u8> {
    let mut b = vec![0u8; REGION_TABLE_SIZE];
    b[0..4].copy_from_slice(SIG_REGI);
    put32(&mut b, 8, entries.len() as u32);
    for (i, r) in entries.iter().enumerate() {
        let o = 16 + i * 32;
        b[o..o + 16].copy_from_slice(&r.guid.0);
        put64(&mut b, o + 16, r.offset);
        put32(&mut b, o + 24, r.length);
        put32(&mut b, o + 28, r.required as u32);
    }
    let c = crc32c(&b);
    put32(&mut b, 4, c);
    b
}

#[derive(Clone, Debug)]
pub struct MetadataEntry {
    pub item: Guid,
    pub offset: u32,
    pub length: u32,
    pub is_user: bool,
    pub is_virtual_disk: bool,
    pub is_required: bool,
}

pub fn parse_metadata_table(b: &[u8], region_len: u64) -> Result<Vec<MetadataEntry>> {
    if &b[0..8] != SIG_METADATA {
        return corrupt("metadata table signature is not \"metadata\"");
    }
    let count = le16(b, 10) as usize;
    if count > 2047 {
        return corrupt(format!("metadata table entry count {count} exceeds 2047"));
    }
    let mut v: Vec<MetadataEntry> = Vec::new();
    for i in 0..count {
        let e = &b[32 + i * 32..32 + (i + 1) * 32];
        let flags = le32(e, 24);
        let m = MetadataEntry {
            item: Guid::from_bytes(e),
            offset: le32(e, 16),
            length: le32(e, 20),
            is_user: flags & 1 != 0,
            is_virtual_disk: flags & 2 != 0,
            is_required: flags & 4 != 0,
        };
        if m.length > 0 {
            if (m.offset as u64) < METADATA_TABLE_SIZE as u64 || m.offset as u64 + m.length as u64 > region_len {
                return corrupt(format!(
                    "metadata item {} lies at offset {:#x} length {:#x}, outside the metadata region (items start at 64 KiB, region is {:#x} bytes)",
                    m.item, m.offset, m.length, region_len
                ));
            }
        }
        if v.iter().any(|o| o.item == m.item && o.is_user == m.is_user) {
            return corrupt(format!("metadata item {} appears twice", m.item));
        }
        v.push(m);
    }
    Ok(v)
}

pub fn serialize_metadata_table(entries: &[MetadataEntry]) -> Vec<u8> {
    let mut b = vec![0u8; METADATA_TABLE_SIZE];
    b[0..8].copy_from_slice(SIG_METADATA);
    put16(&mut b, 10, entries.len() as u16);
    for (i, m) in entries.iter().enumerate() {
        let o = 32 + i * 32;
        b[o..o + 16].copy_from_slice(&m.item.0);
        put32(&mut b, o + 16, m.offset);
        put32(&mut b, o + 20, m.length);
        put32(&mut b, o + 24, (m.is_user as u32) | ((m.is_virtual_disk as u32) << 1) | ((m.is_required as u32) << 2));
    }
    b
}

/// Parent locator: type and key/value pairs in file order.
#[derive(Clone, Debug, Default)]
pub struct ParentLocator {
    pub locator_type: Guid,
    pub entries: Vec<(String, String)>,
}

impl ParentLocator {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    pub fn set(&mut self, key: &str, value: &str) {
        if let Some(e) = self.entries.iter_mut().find(|(k, _)| k == key) {
            e.1 = value.to_string();
        } else {
            self.entries.push((key.to_string(), value.to_string()));
        }
    }
    pub fn parse(b: &[u8]) -> Result<ParentLocator> {
        if b.len() < 20 {
            return corrupt(format!("parent locator is {} bytes, shorter than its 20-byte header", b.len()));
        }
        let locator_type = Guid::from_bytes(b);
        let count = le16(b, 18) as usize;
        if 20 + count * 12 > b.len() {
            return corrupt(format!("parent locator claims {count} entries but is only {} bytes", b.len()));
        }
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            let e = &b[20 + i * 12..20 + (i + 1) * 12];
            let (ko, vo, kl, vl) = (le32(e, 0) as usize, le32(e, 4) as usize, le16(e, 8) as usize, le16(e, 10) as usize);
            let key = b.get(ko..ko.saturating_add(kl)).filter(|_| ko.checked_add(kl).is_some());
            let val = b.get(vo..vo.saturating_add(vl)).filter(|_| vo.checked_add(vl).is_some());
            match (key, val) {
                (Some(k), Some(v)) if kl % 2 == 0 && vl % 2 == 0 && kl > 0 => {
                    entries.push((utf16le(k), utf16le(v)));
                }
                _ => {
                    return corrupt(format!(
                        "parent locator entry {i} (key at {ko:#x}+{kl}, value at {vo:#x}+{vl}) lies outside the {}-byte locator or has an odd or empty length",
                        b.len()
                    ))
                }
            }
        }
        Ok(ParentLocator { locator_type, entries })
    }
    pub fn serialize(&self) -> Vec<u8> {
        let mut head = vec![0u8; 20 + self.entries.len() * 12];
        head[0..16].copy_from_slice(&self.locator_type.0);
        put16(&mut head, 18, self.entries.len() as u16);
        let mut data = Vec::new();
        let base = head.len();
        for (i, (k, v)) in self.entries.iter().enumerate() {
            let kb = to_utf16le(k);
            let vb = to_utf16le(v);
            let ko = base + data.len();
            data.extend_from_slice(&kb);
            let vo = base + data.len();
            data.extend_from_slice(&vb);
            let o = 20 + i * 12;
            put32(&mut head, o, ko as u32);
            put32(&mut head, o + 4, vo as u32);
            put16(&mut head, o + 8, kb.len() as u16);
            put16(&mut head, o + 10, vb.len() as u16);
        }
        head.extend_from_slice(&data);
        head
    }
}

/// The metadata items Stillpoint understands.
#[derive(Clone, Debug)]
pub struct Metadata {
    pub block_size: u32,
    pub leave_block_allocated: bool,
    pub has_parent: bool,
    pub virtual_size: u64,
    pub disk_id: Guid,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub parent_locator: Option<ParentLocator>,
    pub entries: Vec<MetadataEntry>,
}

pub fn parse_metadata(region: &[u8]) -> Result<Metadata> {
    let entries = parse_metadata_table(&region[..METADATA_TABLE_SIZE], region.len() as u64)?;
    let known = [MD_FILE_PARAMS, MD_VIRTUAL_SIZE, MD_DISK_ID, MD_LOGICAL_SECTOR, MD_PHYSICAL_SECTOR, MD_PARENT_LOCATOR];
    for e in &entries {
        if e.is_required && (e.is_user || !known.contains(&e.item)) {
            return Err(Error::new(
                crate::error::Kind::Unsupported,
                format!("metadata item {} is marked required but is unknown to this implementation; the file cannot be opened safely", e.item),
            ));
        }
    }
    let item = |g: Guid, min: usize| -> Result<Option<&[u8]>> {
        match entries.iter().find(|e| e.item == g && !e.is_user) {
            None => Ok(None),
            Some(e) => {
                if (e.length as usize) < min {
                    return corrupt(format!("metadata item {g} is {} bytes, expected at least {min}", e.length));
                }
                Ok(Some(&region[e.offset as usize..e.offset as usize + e.length as usize]))
            }
        }
    };
    let need = |g: Guid, min: usize, name: &str| -> Result<&[u8]> {
        item(g, min)?.ok_or_else(|| Error::corrupt(format!("required metadata item {name} ({g}) is missing")))
    };
    let fp = need(MD_FILE_PARAMS, 8, "File Parameters")?;
    let block_size = le32(fp, 0);
    let flags = le32(fp, 4);
    let virtual_size = le64(need(MD_VIRTUAL_SIZE, 8, "Virtual Disk Size")?, 0);
    let disk_id = Guid::from_bytes(need(MD_DISK_ID, 16, "Virtual Disk ID")?);
    let lss = le32(need(MD_LOGICAL_SECTOR, 4, "Logical Sector Size")?, 0);
    let pss = le32(need(MD_PHYSICAL_SECTOR, 4, "Physical Sector Size")?, 0);
    let has_parent = flags & 2 != 0;
    if !(MIB..=256 * MIB).contains(&(block_size as u64)) || !block_size.is_power_of_two() {
        return corrupt(format!("block size {block_size} is not a power of two between 1 MiB and 256 MiB (File Parameters metadata)"));
    }
    if lss != 512 && lss != 4096 {
        return corrupt(format!("logical sector size {lss} is neither 512 nor 4096"));
    }
    if pss != 512 && pss != 4096 {
        return corrupt(format!("physical sector size {pss} is neither 512 nor 4096"));
    }
    if virtual_size == 0 || virtual_size > MAX_VIRTUAL_SIZE || virtual_size % lss as u64 != 0 {
        return corrupt(format!(
            "virtual disk size {virtual_size} is zero, above 64 TiB or not a multiple of the logical sector size {lss}"
        ));
    }
    let parent_locator = match item(MD_PARENT_LOCATOR, 20)? {
        Some(b) => Some(ParentLocator::parse(b)?),
        None => None,
    };
    if has_parent && parent_locator.is_none() {
        return corrupt("the file is a differencing disk (HasParent) but has no parent locator metadata item");
    }
    Ok(Metadata {
        block_size,
        leave_block_allocated: flags & 1 != 0,
        has_parent,
        virtual_size,
        disk_id,
        logical_sector_size: lss,
        physical_sector_size: pss,
        parent_locator,
        entries,
    })
}

/// BAT geometry derived from the metadata.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub block_size: u64,
    pub sector_size: u64,
    pub chunk_ratio: u64,
    pub data_blocks: u64,
    pub bitmap_blocks: u64,
    pub bat_entries: u64,
}

impl Geometry {
    pub fn new(block_size: u64, lss: u64, virtual_size: u64, has_parent: bool) -> Geometry {
        let chunk_ratio = ((1u64 << 23) * lss) / block_size;
        let data_blocks = virtual_size.div_ceil(block_size);
        let bitmap_blocks = data_blocks.div_ceil(chunk_ratio);
        let bat_entries = if has_parent {
            bitmap_blocks * (chunk_ratio + 1)
        } else {
            data_blocks + (data_blocks - 1) / chunk_ratio
        };
        Geometry { block_size, sector_size: lss, chunk_ratio, data_blocks, bitmap_blocks, bat_entries }
    }
    #[inline]
    pub fn payload_index(&self, block: u64) -> usize {
        (block + block / self.chunk_ratio) as usize
    }
    #[inline]
    pub fn bitmap_index(&self, chunk: u64) -> usize {
        (chunk * (self.chunk_ratio + 1) + self.chunk_ratio) as usize
    }
    /// Bytes of sector bitmap that describe one payload block.
    pub fn bitmap_bytes_per_block(&self) -> u64 {
        self.block_size / self.sector_size / 8
    }
    /// Entries needed to cover every payload block and sector bitmap block (the creator's size).
    pub fn full_bat_entries(&self) -> u64 {
        self.bitmap_blocks * (self.chunk_ratio + 1)
    }
}
