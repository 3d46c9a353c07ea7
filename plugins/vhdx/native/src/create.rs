//! Creating fixed, dynamic and differencing VHDX files. The file is built under a temporary
//! name, fsynced and renamed into place, so a crash never leaves a half-made VHDX at `path`.
use crate::error::{Error, Kind, Result};
use crate::format::*;
use crate::image::Layer;
use crate::util::*;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CreateKind {
    Fixed,
    Dynamic,
    Differencing,
}

pub struct CreateOptions {
    pub kind: CreateKind,
    pub virtual_size: u64,
    pub block_size: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub parent: Option<String>,
}

const LOG_OFF: u64 = MIB;
const LOG_LEN: u64 = MIB;
const META_OFF: u64 = 2 * MIB;
const META_LEN: u64 = MIB;
const BAT_OFF: u64 = 3 * MIB;
pub const LOCATOR_ITEM_OFF: u32 = 64 * 1024 + 4096;

/// The path of `target` relative to directory `from` (both absolute), Windows-style separators.
pub fn relative_path(from_dir: &Path, target: &Path) -> String {
    let a: Vec<Component> = from_dir.components().collect();
    let b: Vec<Component> = target.components().collect();
    let mut i = 0;
    while i < a.len() && i < b.len() && a[i] == b[i] {
        i += 1;
    }
    let mut parts: Vec<String> = Vec::new();
    for _ in i..a.len() {
        parts.push("..".into());
    }
    for c in &b[i..] {
        parts.push(c.as_os_str().to_string_lossy().to_string());
    }
    if parts.first().map(|p| p != "..").unwrap_or(true) {
        parts.insert(0, ".".into());
    }
    parts.join("\\")
}

pub fn create(path: &str, o: &CreateOptions) -> Result<()> {
    let mut vs = o.virtual_size;
    let mut lss = o.logical_sector_size;
    let mut pss = o.physical_sector_size;
    let bs = o.block_size;
    let mut locator: Option<ParentLocator> = None;
    if o.kind == CreateKind::Differencing {
        let ppath = o.parent.as_deref().ok_or_else(|| Error::invalid("a differencing disk needs a parent path"))?;
        let parent = Layer::open_file(ppath, false)?;
        vs = parent.md.virtual_size;
        lss = parent.md.logical_sector_size;
        pss = parent.md.physical_sector_size;
        let dwg = parent.state.read().unwrap().header.data_write_guid;
        let pabs = std::fs::canonicalize(ppath).map_err(|e| Error::io(ppath, e))?;
        let child_abs = if Path::new(path).is_absolute() {
            PathBuf::from(path)
        } else {
            std::env::current_dir().map_err(|e| Error::io("cwd", e))?.join(path)
        };
        let cdir = child_abs.parent().map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.to_path_buf())).unwrap_or_else(|| PathBuf::from("/"));
        let mut pl = ParentLocator { locator_type: LOCATOR_TYPE_VHDX, entries: Vec::new() };
        pl.set("parent_linkage", &dwg.braced());
        pl.set("relative_path", &relative_path(&cdir, &pabs));
        pl.set("absolute_win32_path", &pabs.to_string_lossy());
        locator = Some(pl);
    }
    if !(MIB..=256 * MIB).contains(&bs) || !bs.is_power_of_two() {
        return Err(Error::invalid(format!("block size {bs} must be a power of two between 1 MiB and 256 MiB")));
    }
    if lss != 512 && lss != 4096 {
        return Err(Error::invalid(format!("logical sector size {lss} must be 512 or 4096")));
    }
    if pss != 512 && pss != 4096 {
        return Err(Error::invalid(format!("physical sector size {pss} must be 512 or 4096")));
    }
    if vs == 0 || vs > MAX_VIRTUAL_SIZE || vs % lss as u64 != 0 {
        return Err(Error::invalid(format!(
            "virtual size {vs} must be above 0, at most 64 TiB and a multiple of the logical sector size {lss}"
        )));
    }
    let has_parent = o.kind == CreateKind::Differencing;
    let geo = Geometry::new(bs, lss as u64, vs, has_parent);
    let bat_len = round_up(geo.full_bat_entries() * 8, MIB);
    if bat_len > u32::MAX as u64 - MIB {
        return Err(Error::invalid("the BAT for this size and block size would exceed 4 GiB; use a larger block size"));
    }
    let payload_start = BAT_OFF + bat_len;

    if Path::new(path).exists() {
        return Err(Error::new(Kind::Invalid, format!("{path}: already exists; remove it first or choose another name")));
    }
    let tmp = format!("{path}.creating-{}", std::process::id());
    let f = OpenOptions::new().read(true).write(true).create_new(true).open(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let res = (|| -> Result<()> {
        let w = |buf: &[u8], off: u64| f.write_all_at(buf, off).map_err(|e| Error::io(&tmp, e));
        // file type identifier
        let mut id = vec![0u8; 64 * 1024];
        id[0..8].copy_from_slice(SIG_FILE);
        let creator = to_utf16le("Stillpoint VHDX");
        id[8..8 + creator.len()].copy_from_slice(&creator);
        w(&id, 0)?;
        // region tables
        let regions = [
            RegionEntry { guid: BAT_GUID, offset: BAT_OFF, length: bat_len as u32, required: true },
            RegionEntry { guid: METADATA_GUID, offset: META_OFF, length: META_LEN as u32, required: true },
        ];
        let rt = serialize_region_table(&regions);
        w(&rt, REGION1_OFF)?;
        w(&rt, REGION2_OFF)?;
        // metadata
        let mut items: Vec<(Guid, Vec<u8>, bool, bool)> = Vec::new(); // guid, data, is_virtual_disk, required
        let mut fp = vec![0u8; 8];
        put32(&mut fp, 0, bs as u32);
        put32(&mut fp, 4, (if o.kind == CreateKind::Fixed { 1 } else { 0 }) | (if has_parent { 2 } else { 0 }));
        items.push((MD_FILE_PARAMS, fp, false, true));
        items.push((MD_VIRTUAL_SIZE, vs.to_le_bytes().to_vec(), true, true));
        items.push((MD_DISK_ID, Guid::random().0.to_vec(), true, true));
        items.push((MD_LOGICAL_SECTOR, lss.to_le_bytes().to_vec(), true, true));
        items.push((MD_PHYSICAL_SECTOR, pss.to_le_bytes().to_vec(), true, true));
        let mut entries = Vec::new();
        let mut at = 64 * 1024u32;
        let mut md = vec![0u8; META_LEN as usize];
        for (g, data, vd, req) in &items {
            md[at as usize..at as usize + data.len()].copy_from_slice(data);
            entries.push(MetadataEntry { item: *g, offset: at, length: data.len() as u32, is_user: false, is_virtual_disk: *vd, is_required: *req });
            at += 8.max(data.len() as u32);
        }
        if let Some(pl) = &locator {
            let b = pl.serialize();
            if LOCATOR_ITEM_OFF as usize + b.len() > md.len() / 2 {
                return Err(Error::invalid("the parent paths are too long for the parent locator"));
            }
            md[LOCATOR_ITEM_OFF as usize..LOCATOR_ITEM_OFF as usize + b.len()].copy_from_slice(&b);
            entries.push(MetadataEntry {
                item: MD_PARENT_LOCATOR,
                offset: LOCATOR_ITEM_OFF,
                length: b.len() as u32,
                is_user: false,
                is_virtual_disk: false,
                is_required: true,
            });
        }
        let table = serialize_metadata_table(&entries);
        md[..table.len()].copy_from_slice(&table);
        w(&md, META_OFF)?;
        // BAT
        let mut bat = vec![0u8; bat_len as usize];
        let mut file_len = payload_start;
        if o.kind == CreateKind::Fixed {
            for b in 0..geo.data_blocks {
                let off = payload_start + b * bs;
                put64(&mut bat, geo.payload_index(b) * 8, off | PB_FULLY_PRESENT as u64);
            }
            file_len = payload_start + geo.data_blocks * bs;
        }
        w(&bat, BAT_OFF)?;
        f.set_len(file_len).map_err(|e| Error::io(&tmp, e))?;
        // headers last
        let h = Header {
            seq: 1,
            file_write_guid: Guid::random(),
            data_write_guid: Guid::random(),
            log_guid: Guid::ZERO,
            log_version: 0,
            version: 1,
            log_length: LOG_LEN as u32,
            log_offset: LOG_OFF,
            checksum: 0,
        };
        w(&h.serialize(), HEADER1_OFF)?;
        let h2 = Header { seq: 2, ..h };
        w(&h2.serialize(), HEADER2_OFF)?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        Ok(())
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if Path::new(path).exists() {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::new(Kind::Invalid, format!("{path}: already exists")));
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Some(d) = Path::new(path).parent() {
        let d = if d.as_os_str().is_empty() { Path::new(".") } else { d };
        if let Ok(df) = std::fs::File::open(d) {
            let _ = df.sync_all();
        }
    }
    Ok(())
}
