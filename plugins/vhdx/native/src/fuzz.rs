//! Mutation fuzzer: flips bytes in the headers, region tables, metadata, BAT, sector bitmaps and
//! log of a valid image held in memory, then opens and reads it. Every case must end in success
//! or a clear error; a panic is a bug and is reported with the case that caused it.
use crate::backing::{Backing, MemBacking};
use crate::chain::Disk;
use crate::error::Result;
use crate::format::*;
use crate::image::{bat_offset, bat_state, Layer};
use crate::info;
use crate::util::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, RwLock};
use std::time::Instant;

struct Shared(Arc<MemBacking>);
impl Backing for Shared {
    fn read_at(&self, b: &mut [u8], o: u64) -> Result<()> {
        self.0.read_at(b, o)
    }
    fn write_at(&self, b: &[u8], o: u64) -> Result<()> {
        self.0.write_at(b, o)
    }
    fn len(&self) -> Result<u64> {
        self.0.len()
    }
    fn set_len(&self, n: u64) -> Result<()> {
        self.0.set_len(n)
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Target {
    Header(u64),
    RegionTable(u64),
    MetadataTable,
    MetadataItems,
    Bat,
    Bitmaps,
    Log,
}

fn exercise(mem: &Arc<MemBacking>, rng: &mut Rng) -> std::result::Result<(), String> {
    let layer = Layer::open("fuzz".into(), Box::new(Shared(mem.clone())), false).map_err(|e| e.msg)?;
    let disk = Disk::single(layer);
    let _ = info::disk_json(&disk);
    let ext = disk.allocation().map_err(|e| e.msg)?;
    let mut budget: u64 = 4 * MIB;
    let mut buf = vec![0u8; 256 * 1024];
    for (o, l, d) in ext.iter().filter(|e| e.2).take(8) {
        let _ = d;
        let n = (*l).min(buf.len() as u64).min(budget);
        if n == 0 {
            break;
        }
        disk.read(*o, &mut buf[..n as usize]).map_err(|e| e.msg)?;
        budget -= n;
    }
    let vs = disk.virtual_size();
    for _ in 0..4 {
        let off = rng.below(vs);
        let n = rng.below(64 * 1024).min(vs - off);
        let _ = disk.read(off, &mut buf[..n as usize]);
    }
    Ok(())
}

pub fn run(path: &str, seed: u64, cases: u64) -> Result<String> {
    let data = std::fs::read(path).map_err(|e| crate::error::Error::io(path, e))?;
    let mem = Arc::new(MemBacking { data: RwLock::new(data) });
    let pristine_len = mem.len()?;
    // learn the structure from the pristine image
    let layer = Layer::open("pristine".into(), Box::new(Shared(mem.clone())), false).map_err(|e| e.at(path))?;
    let h = layer.state.read().unwrap().header.clone();
    let mut targets: Vec<(Target, u64, u64)> = vec![
        (Target::Header(HEADER1_OFF), HEADER1_OFF, 4096),
        (Target::Header(HEADER2_OFF), HEADER2_OFF, 4096),
        (Target::RegionTable(REGION1_OFF), REGION1_OFF, 16 + 32 * layer.regions.len() as u64),
        (Target::RegionTable(REGION2_OFF), REGION2_OFF, 16 + 32 * layer.regions.len() as u64),
        (Target::MetadataTable, layer.metadata_region.offset, 32 + 32 * layer.md.entries.len() as u64),
    ];
    let items_end = layer.md.entries.iter().map(|e| e.offset as u64 + e.length as u64).max().unwrap_or(65536);
    targets.push((Target::MetadataItems, layer.metadata_region.offset + 65536, items_end.saturating_sub(65536).max(1)));
    targets.push((Target::Bat, layer.bat_region.offset, (layer.geo.bat_entries * 8).min(layer.bat_region.length as u64)));
    {
        let st = layer.state.read().unwrap();
        if layer.md.has_parent {
            for c in 0..layer.geo.bitmap_blocks {
                let e = st.bat[layer.geo.bitmap_index(c)];
                if bat_state(e) == SB_PRESENT {
                    targets.push((Target::Bitmaps, bat_offset(e), MIB));
                }
            }
        }
    }
    if h.log_length > 0 {
        // the used part of the log: up to the last non-zero 4 KiB sector
        let mut used = 0;
        let mut s = vec![0u8; 4096];
        let mut p = 0;
        while p < h.log_length as u64 {
            mem.read_at(&mut s, h.log_offset + p)?;
            if s.iter().any(|&b| b != 0) {
                used = p + 4096;
            }
            p += 4096;
        }
        if used > 0 {
            targets.push((Target::Log, h.log_offset, used));
        }
    }
    drop(layer);

    let mut rng = Rng::new(seed);
    let (mut opened, mut errors, mut panics) = (0u64, 0u64, 0u64);
    let mut first_panic = String::new();
    let mut max_ms = 0f64;
    let mut per_target = [0u64; 7];
    let start = Instant::now();
    for case in 0..cases {
        let (t, base, len) = targets[rng.below(targets.len() as u64) as usize];
        let ti = match t {
            Target::Header(_) => 0,
            Target::RegionTable(_) => 1,
            Target::MetadataTable => 2,
            Target::MetadataItems => 3,
            Target::Bat => 4,
            Target::Bitmaps => 5,
            Target::Log => 6,
        };
        per_target[ti] += 1;
        let mut saved: Vec<(u64, Vec<u8>)> = Vec::new();
        let flips = 1 + rng.below(6);
        for _ in 0..flips {
            let width = [1u64, 1, 2, 4, 8][rng.below(5) as usize];
            let off = base + rng.below(len.max(width)).min(len.saturating_sub(width));
            let mut old = vec![0u8; width as usize];
            if mem.read_at(&mut old, off).is_err() {
                continue;
            }
            let new: Vec<u8> = match rng.below(4) {
                0 => old.iter().map(|b| b ^ (1 << rng.below(8))).collect(),
                1 => (0..width).map(|_| rng.next() as u8).collect(),
                2 => {
                    let v = [0u64, 1, u64::MAX, 0x8000_0000, 0xFFFF_FFFF, MIB, 1 << 44, 7, 6, 0x100000 | 6][rng.below(10) as usize];
                    v.to_le_bytes()[..width as usize].to_vec()
                }
                _ => old.iter().map(|b| !b).collect(),
            };
            saved.push((off, old));
            let _ = mem.write_at(&new, off);
        }
        // half of the time, fix the checksum so parsing goes past it
        if rng.below(2) == 0 {
            let fix = |mem: &MemBacking, at: u64, size: u64, saved: &mut Vec<(u64, Vec<u8>)>| {
                let mut b = vec![0u8; size as usize];
                if mem.read_at(&mut b, at).is_ok() {
                    let c = crc32c_with_zero_field(&b, 4);
                    saved.push((at + 4, b[4..8].to_vec()));
                    let _ = mem.write_at(&c.to_le_bytes(), at + 4);
                }
            };
            match t {
                Target::Header(o) => fix(&mem, o, 4096, &mut saved),
                Target::RegionTable(o) => fix(&mem, o, 65536, &mut saved),
                Target::Log => {
                    // fix the entry that starts at the nearest 4 KiB boundary at or below a flip
                    if let Some((o, _)) = saved.first() {
                        let mut p = (o - h.log_offset) / 4096 * 4096;
                        loop {
                            let mut s = [0u8; 16];
                            if mem.read_at(&mut s, h.log_offset + p).is_ok() && &s[0..4] == b"loge" {
                                let l = le32(&s, 8) as u64;
                                if l >= 4096 && l % 4096 == 0 && p + l <= h.log_length as u64 {
                                    fix(&mem, h.log_offset + p, l, &mut saved);
                                }
                                break;
                            }
                            if p == 0 {
                                break;
                            }
                            p -= 4096;
                        }
                    }
                }
                _ => {}
            }
        }
        let t0 = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| exercise(&mem, &mut rng)));
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        if ms > max_ms {
            max_ms = ms;
        }
        match r {
            Ok(Ok(())) => opened += 1,
            Ok(Err(_)) => errors += 1,
            Err(p) => {
                panics += 1;
                if first_panic.is_empty() {
                    let m = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default();
                    first_panic = format!("case {case}: {m}; mutations {:?}", saved.iter().map(|(o, _)| format!("{o:#x}")).collect::<Vec<_>>());
                }
            }
        }
        for (off, old) in saved.iter().rev() {
            let _ = mem.write_at(old, *off);
        }
        let _ = mem.set_len(pristine_len);
    }
    Ok(format!(
        "{{\"cases\":{cases},\"opened\":{opened},\"errors\":{errors},\"panics\":{panics},\"firstPanic\":{},\"maxCaseMs\":{max_ms:.3},\"totalMs\":{:.1},\"perTarget\":{{\"headers\":{},\"regionTables\":{},\"metadataTable\":{},\"metadataItems\":{},\"bat\":{},\"sectorBitmaps\":{},\"log\":{}}}}}",
        json_str(&first_panic),
        start.elapsed().as_secs_f64() * 1000.0,
        per_target[0], per_target[1], per_target[2], per_target[3], per_target[4], per_target[5], per_target[6]
    ))
}
