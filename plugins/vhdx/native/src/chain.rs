//! A chain of layers (top first): parent resolution and linkage checks, reads, the allocation
//! map, writes to the top layer.
use crate::error::{corrupt, Error, Kind, Result};
use crate::format::*;
use crate::image::{Layer, LayerState, Src};
use crate::util::*;
use std::path::{Path, PathBuf};
use std::sync::RwLockReadGuard;

#[derive(Clone, Debug)]
pub struct LinkCheck {
    pub child: String,
    pub parent: String,
    /// How the parent was found: "explicit", "relative_path", "absolute_win32_path", ...
    pub found_by: String,
    pub expected: Option<Guid>,
    pub expected2: Option<Guid>,
    pub actual: Guid,
    pub ok: bool,
    pub forced: bool,
    pub tried: Vec<String>,
}

pub struct Disk {
    pub layers: Vec<Layer>,
    pub links: Vec<LinkCheck>,
    pub writable: bool,
}

pub const MAX_CHAIN: usize = 256;

/// Candidate parent paths from a locator, in the order MS-VHDX suggests.
pub fn parent_candidates(child_path: &str, pl: &ParentLocator) -> Vec<(String, String)> {
    let dir = Path::new(child_path).parent().map(|p| p.to_path_buf()).unwrap_or_else(|| PathBuf::from("."));
    let mut out: Vec<(String, String)> = Vec::new();
    let mut push = |how: &str, p: PathBuf| {
        let s = p.to_string_lossy().to_string();
        if !s.is_empty() && !out.iter().any(|(_, q)| *q == s) {
            out.push((how.to_string(), s));
        }
    };
    let norm = |s: &str| s.replace('\\', "/");
    let strip_prefix = |s: &str| -> String {
        let s = norm(s);
        let s = s.strip_prefix("//?/").map(|x| x.to_string()).unwrap_or(s);
        // \\?\Volume{...}\path -> /path
        if s.to_ascii_lowercase().starts_with("volume{") {
            if let Some(i) = s.find('/') {
                return s[i..].to_string();
            }
        }
        // drive letter C:/path -> /path
        let b = s.as_bytes();
        if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
            return s[2..].to_string();
        }
        s
    };
    if let Some(rel) = pl.get("relative_path") {
        let r = norm(rel);
        push("relative_path", dir.join(r.trim_start_matches("./")));
    }
    for key in ["absolute_win32_path", "volume_path"] {
        if let Some(abs) = pl.get(key) {
            let p = strip_prefix(abs);
            if p.starts_with('/') {
                push(key, PathBuf::from(&p));
            }
        }
    }
    // last resort: the parent's file name next to the child
    for key in ["relative_path", "absolute_win32_path", "volume_path"] {
        if let Some(v) = pl.get(key) {
            let n = norm(v);
            if let Some(name) = n.rsplit('/').next() {
                if !name.is_empty() {
                    push(&format!("{key} (file name next to the child)"), dir.join(name));
                }
            }
        }
    }
    out
}

fn linkage_of(pl: &ParentLocator) -> (Option<Guid>, Option<Guid>) {
    let a = pl.get("parent_linkage").and_then(Guid::parse);
    let b = pl.get("parent_linkage2").and_then(Guid::parse).filter(|g| !g.is_zero());
    (a, b)
}

impl Disk {
    pub fn single(layer: Layer) -> Disk {
        Disk { writable: layer.writable, layers: vec![layer], links: Vec::new() }
    }

    pub fn open(path: &str, explicit_parents: &[String], writable: bool, force: bool) -> Result<Disk> {
        let top = Layer::open_file(path, writable)?;
        let mut disk = Disk { layers: vec![top], links: Vec::new(), writable };
        let mut seen: Vec<PathBuf> = vec![std::fs::canonicalize(path).unwrap_or_else(|_| PathBuf::from(path))];
        loop {
            let child = disk.layers.last().unwrap();
            if !child.md.has_parent {
                break;
            }
            if disk.layers.len() >= MAX_CHAIN {
                return corrupt(format!("{path}: the chain is longer than {MAX_CHAIN} disks"));
            }
            let child_path = child.path.clone();
            let pl = child.md.parent_locator.clone().unwrap_or_default();
            let (exp, exp2) = linkage_of(&pl);
            let explicit = explicit_parents.get(disk.layers.len() - 1);
            let candidates: Vec<(String, String)> = match explicit {
                Some(p) => vec![("explicit".to_string(), p.clone())],
                None => parent_candidates(&child_path, &pl),
            };
            let mut tried = Vec::new();
            let mut mismatch: Option<(Layer, String, String)> = None;
            let mut chosen: Option<(Layer, String, String)> = None;
            for (how, cand) in &candidates {
                tried.push(cand.clone());
                if !Path::new(cand).is_file() {
                    continue;
                }
                let layer = Layer::open_file(cand, false)?;
                let actual = layer.state.read().unwrap().header.data_write_guid;
                let ok = exp == Some(actual) || exp2 == Some(actual);
                if ok {
                    chosen = Some((layer, how.clone(), cand.clone()));
                    break;
                } else if mismatch.is_none() {
                    mismatch = Some((layer, how.clone(), cand.clone()));
                }
            }
            let (layer, how, found, ok) = match (chosen, mismatch) {
                (Some((l, h, p)), _) => (l, h, p, true),
                (None, Some((l, h, p))) => {
                    let actual = l.state.read().unwrap().header.data_write_guid;
                    if !force {
                        return Err(Error::new(
                            Kind::Linkage,
                            format!(
                                "{child_path}: parent {p} (found by {h}) has DataWriteGuid {actual} but the child's parent_linkage is {}{}: the parent was modified or is not this disk's parent; pass the right parent or force to accept it",
                                exp.map(|g| g.to_string()).unwrap_or_else(|| "missing".into()),
                                exp2.map(|g| format!(" (parent_linkage2 {g})")).unwrap_or_default()
                            ),
                        ));
                    }
                    (l, h, p, false)
                }
                (None, None) => {
                    return Err(Error::new(
                        Kind::NotFound,
                        format!(
                            "{child_path}: parent not found; tried {} (parent locator: {}); supply the parent path explicitly (parentPaths)",
                            if tried.is_empty() { "nothing (the parent locator has no paths)".to_string() } else { tried.join(", ") },
                            pl.entries.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
                        ),
                    ))
                }
            };
            let canon = std::fs::canonicalize(&found).unwrap_or_else(|_| PathBuf::from(&found));
            if seen.contains(&canon) {
                return corrupt(format!("{child_path}: the chain loops back to {found}"));
            }
            seen.push(canon);
            if layer.md.virtual_size != child.md.virtual_size {
                return corrupt(format!(
                    "{child_path}: virtual size {} differs from its parent {found} ({})",
                    child.md.virtual_size, layer.md.virtual_size
                ));
            }
            if layer.md.logical_sector_size != child.md.logical_sector_size {
                return corrupt(format!(
                    "{child_path}: logical sector size {} differs from its parent {found} ({})",
                    child.md.logical_sector_size, layer.md.logical_sector_size
                ));
            }
            let actual = layer.state.read().unwrap().header.data_write_guid;
            disk.links.push(LinkCheck {
                child: child_path,
                parent: found,
                found_by: how,
                expected: exp,
                expected2: exp2,
                actual,
                ok,
                forced: !ok,
                tried,
            });
            disk.layers.push(layer);
        }
        Ok(disk)
    }

    pub fn virtual_size(&self) -> u64 {
        self.layers[0].md.virtual_size
    }
    pub fn sector_size(&self) -> u64 {
        self.layers[0].geo.sector_size
    }

    fn guards(&self) -> Vec<RwLockReadGuard<'_, LayerState>> {
        self.layers.iter().map(|l| l.state.read().unwrap_or_else(|p| p.into_inner())).collect()
    }

    /// Reads `buf.len()` bytes at virtual offset `off` through the chain.
    pub fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let end = off.checked_add(buf.len() as u64).ok_or_else(|| Error::invalid("offset + length overflows"))?;
        if end > self.virtual_size() {
            return Err(Error::invalid(format!(
                "read of {} bytes at {off} goes past the end of the virtual disk ({} bytes)",
                buf.len(),
                self.virtual_size()
            )));
        }
        let g = self.guards();
        self.read_layer(&g, 0, off, buf)
    }

    fn read_layer(&self, g: &[RwLockReadGuard<'_, LayerState>], li: usize, off: u64, buf: &mut [u8]) -> Result<()> {
        if li >= self.layers.len() {
            buf.fill(0);
            return Ok(());
        }
        let layer = &self.layers[li];
        let st = &g[li];
        let bs = layer.geo.block_size;
        let len = buf.len() as u64;
        let mut runs: Vec<(u64, Src)> = Vec::new();
        let mut pos = 0u64;
        // pending coalesced operations: (buf_start, len, src)
        let mut pend: Option<(u64, u64, Src)> = None;
        let flush = |p: (u64, u64, Src), buf: &mut [u8]| -> Result<()> {
            let (bstart, n, src) = p;
            let dst = &mut buf[bstart as usize..(bstart + n) as usize];
            match src {
                Src::Data(fo) => layer.raw_read(fo, dst).map_err(|e| e.at(&layer.path)),
                Src::Zero => {
                    dst.fill(0);
                    Ok(())
                }
                Src::Parent => self.read_layer(g, li + 1, off + bstart, dst),
            }
        };
        while pos < len {
            let v = off + pos;
            let block = v / bs;
            let in_off = v % bs;
            let n = (bs - in_off).min(len - pos);
            runs.clear();
            layer.block_runs(st, block, in_off, n, &mut runs);
            for &(rn, src) in &runs {
                let merged = match (&mut pend, src) {
                    (Some((bst, pl, Src::Data(fo))), Src::Data(f2)) if *fo + *pl == f2 && *bst + *pl == pos => {
                        *pl += rn;
                        true
                    }
                    (Some((bst, pl, Src::Zero)), Src::Zero) if *bst + *pl == pos => {
                        *pl += rn;
                        true
                    }
                    (Some((bst, pl, Src::Parent)), Src::Parent) if *bst + *pl == pos => {
                        *pl += rn;
                        true
                    }
                    _ => false,
                };
                if !merged {
                    if let Some(p) = pend.take() {
                        flush(p, buf)?;
                    }
                    pend = Some((pos, rn, src));
                }
                pos += rn;
            }
        }
        if let Some(p) = pend.take() {
            flush(p, buf)?;
        }
        Ok(())
    }

    /// The allocation map of [off, off+len): (offset, length, is_data) extents, merged.
    pub fn allocation(&self) -> Result<Vec<(u64, u64, bool)>> {
        let g = self.guards();
        let mut out: Vec<(u64, u64, bool)> = Vec::new();
        self.map_layer(&g, 0, 0, self.virtual_size(), &mut out, None);
        Ok(out)
    }

    /// Extents this layer alone defines: (offset, length, Src) with Parent runs omitted.
    pub fn layer_extents(&self, li: usize) -> Vec<(u64, u64, Src)> {
        let g = self.guards();
        let layer = &self.layers[li];
        let bs = layer.geo.block_size;
        let vs = layer.md.virtual_size;
        let mut out: Vec<(u64, u64, Src)> = Vec::new();
        let mut runs = Vec::new();
        let mut v = 0;
        while v < vs {
            let n = bs.min(vs - v);
            runs.clear();
            layer.block_runs(&g[li], v / bs, 0, n, &mut runs);
            let mut p = v;
            for &(rn, src) in &runs {
                if src != Src::Parent {
                    let kind_zero = src == Src::Zero;
                    match out.last_mut() {
                        Some((o, l, s)) if *o + *l == p && ((*s == Src::Zero) == kind_zero) => *l += rn,
                        _ => out.push((p, rn, src)),
                    }
                }
                p += rn;
            }
            v += n;
        }
        out
    }

    fn map_layer(&self, g: &[RwLockReadGuard<'_, LayerState>], li: usize, off: u64, len: u64, out: &mut Vec<(u64, u64, bool)>, _d: Option<()>) {
        let push = |out: &mut Vec<(u64, u64, bool)>, o: u64, l: u64, data: bool| {
            if l == 0 {
                return;
            }
            match out.last_mut() {
                Some((po, pl, pd)) if *po + *pl == o && *pd == data => *pl += l,
                _ => out.push((o, l, data)),
            }
        };
        if li >= self.layers.len() {
            push(out, off, len, false);
            return;
        }
        let layer = &self.layers[li];
        let bs = layer.geo.block_size;
        let mut runs = Vec::new();
        let mut pos = 0;
        let mut parent_pending: Option<(u64, u64)> = None;
        while pos < len {
            let v = off + pos;
            let n = (bs - v % bs).min(len - pos);
            runs.clear();
            layer.block_runs(&g[li], v / bs, v % bs, n, &mut runs);
            let mut p = v;
            for &(rn, src) in &runs {
                match src {
                    Src::Parent => match &mut parent_pending {
                        Some((po, pl)) if *po + *pl == p => *pl += rn,
                        _ => {
                            if let Some((po, pl)) = parent_pending.take() {
                                self.map_layer(g, li + 1, po, pl, out, None);
                            }
                            parent_pending = Some((p, rn));
                        }
                    },
                    other => {
                        if let Some((po, pl)) = parent_pending.take() {
                            self.map_layer(g, li + 1, po, pl, out, None);
                        }
                        push(out, p, rn, matches!(other, Src::Data(_)));
                    }
                }
                p += rn;
            }
            pos += n;
        }
        if let Some((po, pl)) = parent_pending.take() {
            self.map_layer(g, li + 1, po, pl, out, None);
        }
    }

    fn top_writable(&self) -> Result<&Layer> {
        if !self.writable {
            return Err(Error::invalid(format!("{}: the disk is open read-only; open it with writable: true to write", self.layers[0].path)));
        }
        Ok(&self.layers[0])
    }

    /// Writes `data` at `off`; unaligned head/tail sectors are read through the chain first.
    pub fn write(&self, off: u64, data: &[u8]) -> Result<()> {
        let top = self.top_writable()?;
        let ss = self.sector_size();
        let end = off.checked_add(data.len() as u64).ok_or_else(|| Error::invalid("offset + length overflows"))?;
        if end > self.virtual_size() {
            return Err(Error::invalid(format!(
                "write of {} bytes at {off} goes past the end of the virtual disk ({} bytes)",
                data.len(),
                self.virtual_size()
            )));
        }
        if data.is_empty() {
            return Ok(());
        }
        if off % ss == 0 && end % ss == 0 {
            let mut st = top.state.write().unwrap_or_else(|p| p.into_inner());
            return top.write_aligned(&mut st, off, data).map_err(|e| e.at(&top.path));
        }
        let a0 = off / ss * ss;
        let a1 = round_up(end, ss);
        // read-modify-write of the edge sectors only; the middle is written straight
        let mut head = vec![0u8; ss as usize];
        let mut tail = vec![0u8; ss as usize];
        self.read(a0, &mut head)?;
        self.read(a1 - ss, &mut tail)?;
        let mut st = top.state.write().unwrap_or_else(|p| p.into_inner());
        if a1 - a0 == ss {
            head[(off - a0) as usize..(end - a0) as usize].copy_from_slice(data);
            return top.write_aligned(&mut st, a0, &head).map_err(|e| e.at(&top.path));
        }
        let hn = (a0 + ss - off).min(data.len() as u64) as usize;
        head[(off - a0) as usize..].copy_from_slice(&data[..hn]);
        top.write_aligned(&mut st, a0, &head)?;
        let mid_start = a0 + ss;
        let mid_end = a1 - ss;
        if mid_end > mid_start {
            let s = (mid_start - off) as usize;
            top.write_aligned(&mut st, mid_start, &data[s..s + (mid_end - mid_start) as usize])?;
        }
        let tn = (end - (a1 - ss)) as usize;
        tail[..tn].copy_from_slice(&data[data.len() - tn..]);
        top.write_aligned(&mut st, a1 - ss, &tail).map_err(|e| e.at(&top.path))
    }

    pub fn write_zeroes(&self, off: u64, len: u64) -> Result<()> {
        let top = self.top_writable()?;
        let ss = self.sector_size();
        if off % ss != 0 || len % ss != 0 {
            return Err(Error::invalid("write_zeroes needs sector-aligned offset and length"));
        }
        let mut st = top.state.write().unwrap_or_else(|p| p.into_inner());
        top.write_zeroes(&mut st, off, len)
    }

    pub fn flush(&self) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        let top = &self.layers[0];
        let mut st = top.state.write().unwrap_or_else(|p| p.into_inner());
        top.flush_metadata(&mut st).map_err(|e| e.at(&top.path))?;
        top.backing.sync()
    }
}
