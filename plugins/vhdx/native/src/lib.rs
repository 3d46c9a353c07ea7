//! Stillpoint's VHDX library (MS-VHDX), standard library only, with a C ABI for ffi-rs.
//!
//! Every exported function returns an `i64`: >= 0 on success (a handle, a count or a size),
//! or the negative error kind (see `error::Kind`) with a NUL-terminated UTF-8 message written
//! into the caller's `err` buffer. Panics never cross the ABI: they become kind 7 (Internal).
pub mod backing;
pub mod chain;
pub mod create;
pub mod error;
pub mod format;
pub mod fuzz;
pub mod image;
pub mod info;
pub mod log;
pub mod merge;
pub mod util;

use chain::Disk;
use error::{Error, Kind, Result};
use std::ffi::c_char;
use stillpoint_ffi::Handles;

impl stillpoint_ffi::FfiError for Error {
    fn code(&self) -> i64 {
        self.kind as i64
    }
    fn message(&self) -> &str {
        &self.msg
    }
}

static HANDLES: Handles<Disk> = Handles::new();

fn get(h: i64) -> Result<std::sync::Arc<Disk>> {
    HANDLES.get(h).ok_or_else(|| Error::invalid(format!("VHDX handle {h} is not open (closed already?)")))
}

fn guard(err: *mut u8, errlen: i64, f: impl FnOnce() -> Result<i64>) -> i64 {
    stillpoint_ffi::guard(err, errlen, Kind::Internal as i64, "internal error in the VHDX library (a bug; please report it)", f)
}

fn cstr(p: *const c_char, what: &str) -> Result<String> {
    stillpoint_ffi::cstr(p).ok_or_else(|| Error::invalid(format!("{what} is missing")))
}

fn out_slice<'a>(buf: *mut u8, buflen: i64, off: i64, len: i64) -> Result<&'a mut [u8]> {
    stillpoint_ffi::buffer(buf, buflen, off, len).map_err(Error::invalid)
}

/// flags: 1 writable, 2 force (accept a linkage mismatch), 4 this file only (no parents).
#[no_mangle]
pub extern "C" fn stillpoint_vhdx_open(path: *const c_char, parents: *const c_char, flags: i32, err: *mut u8, errlen: i64) -> i64 {
    guard(err, errlen, || {
        let path = cstr(path, "path")?;
        let parents: Vec<String> = cstr(parents, "parents")?.split('\n').filter(|s| !s.is_empty()).map(String::from).collect();
        let disk = if flags & 4 != 0 {
            Disk::single(image::Layer::open_file(&path, flags & 1 != 0)?)
        } else {
            Disk::open(&path, &parents, flags & 1 != 0, flags & 2 != 0)?
        };
        Ok(HANDLES.insert(disk))
    })
}

#[no_mangle]
pub extern "C" fn stillpoint_vhdx_close(h: i64, err: *mut u8, errlen: i64) -> i64 {
    guard(err, errlen, || {
        let d = HANDLES.remove(h);
        match d {
            Some(d) => {
                d.flush()?;
                Ok(0)
            }
            None => Err(Error::invalid(format!("VHDX handle {h} is not open (closed already?)"))),
        }
    })
}

#[no_mangle]
pub extern "C" fn stillpoint_vhdx_read(h: i64, off: i64, buf: *mut u8, buflen: i64, bufoff: i64, len: i64, err: *mut u8, errlen: i64) -> i64 {
    guard(err, errlen, || {
        let d = get(h)?;
        if off < 0 {
            return Err(Error::invalid(format!("negative offset {off}")));
        }
        let s = out_slice(buf, buflen, bufoff, len)?;
        d.read(off as u64, s)?;
        Ok(len)
    })
}

#[no_mangle]
pub extern "C" fn stillpoint_vhdx_write(h: i64, off: i64, buf: *mut u8, buflen: i64, bufoff: i64, len: i64, err: *mut u8, errlen: i64) -> i64 {
    guard(err, errlen, || {
        let d = get(h)?;
        if off < 0 {
            return Err(Error::invalid(format!("negative offset {off}")));
        }
        let s = out_slice(buf, buflen, bufoff, len)?;
        d.write(off as u64, s)?;
        Ok(len)
    })
}

#[no_mangle]
pub extern "C" fn stillpoint_vhdx_flush(h: i64, err: *mut u8, errlen: i64) -> i64 {
    guard(err, errlen, || {
        get(h)?.flush()?;
        Ok(0)
    })
}

/// Writes the chain's info as JSON into `out`; returns the JSON length (retry with a larger
/// buffer when it exceeds `outlen`).
#[no_mangle]
pub extern "C" fn stillpoint_vhdx_info(h: i64, out: *mut u8, outlen: i64, err: *mut u8, errlen: i64) -> i64 {
    guard(err, errlen, || {
        let j = info::disk_json(&*get(h)?);
        let b = j.as_bytes();
        if (b.len() as i64) <= outlen {
            out_slice(out, outlen, 0, b.len() as i64)?.copy_from_slice(b);
        }
        Ok(b.len() as i64)
    })
}

/// Writes extents as little-endian u64 triples (offset, length, 1 = data / 0 = zero); returns
/// the number of extents (retry with a larger buffer when count * 24 exceeds `outlen`).
#[no_mangle]
pub extern "C" fn stillpoint_vhdx_allocation(h: i64, out: *mut u8, outlen: i64, err: *mut u8, errlen: i64) -> i64 {
    guard(err, errlen, || {
        let ext = get(h)?.allocation()?;
        let need = ext.len() as i64 * 24;
        if need <= outlen {
            let s = out_slice(out, outlen, 0, need)?;
            for (i, (o, l, d)) in ext.iter().enumerate() {
                s[i * 24..i * 24 + 8].copy_from_slice(&o.to_le_bytes());
                s[i * 24 + 8..i * 24 + 16].copy_from_slice(&l.to_le_bytes());
                s[i * 24 + 16..i * 24 + 24].copy_from_slice(&(*d as u64).to_le_bytes());
            }
        }
        Ok(ext.len() as i64)
    })
}

/// kind: 0 fixed, 1 dynamic, 2 differencing (over `parent`).
#[no_mangle]
pub extern "C" fn stillpoint_vhdx_create(
    path: *const c_char,
    kind: i32,
    virtual_size: i64,
    block_size: i64,
    lss: i32,
    pss: i32,
    parent: *const c_char,
    err: *mut u8,
    errlen: i64,
) -> i64 {
    guard(err, errlen, || {
        let path = cstr(path, "path")?;
        let parent = cstr(parent, "parent")?;
        let kind = match kind {
            0 => create::CreateKind::Fixed,
            1 => create::CreateKind::Dynamic,
            2 => create::CreateKind::Differencing,
            k => return Err(Error::invalid(format!("unknown disk kind {k}"))),
        };
        if virtual_size < 0 || block_size < 0 {
            return Err(Error::invalid("sizes must not be negative"));
        }
        create::create(
            &path,
            &create::CreateOptions {
                kind,
                virtual_size: virtual_size as u64,
                block_size: block_size as u64,
                logical_sector_size: lss as u32,
                physical_sector_size: pss as u32,
                parent: if parent.is_empty() { None } else { Some(parent) },
            },
        )?;
        Ok(0)
    })
}

#[no_mangle]
pub extern "C" fn stillpoint_vhdx_merge(child: *const c_char, parent: *const c_char, force: i32, err: *mut u8, errlen: i64) -> i64 {
    guard(err, errlen, || {
        let child = cstr(child, "child path")?;
        let parent = cstr(parent, "parent path")?;
        merge::merge_into_parent(&child, if parent.is_empty() { None } else { Some(&parent) }, force != 0)?;
        Ok(0)
    })
}

/// Runs `cases` mutation cases against the image at `path` (in memory); writes a JSON report.
#[no_mangle]
pub extern "C" fn stillpoint_vhdx_fuzz(path: *const c_char, seed: i64, cases: i64, out: *mut u8, outlen: i64, err: *mut u8, errlen: i64) -> i64 {
    guard(err, errlen, || {
        let path = cstr(path, "path")?;
        let j = fuzz::run(&path, seed as u64, cases.max(0) as u64)?;
        let b = j.as_bytes();
        if (b.len() as i64) <= outlen {
            out_slice(out, outlen, 0, b.len() as i64)?.copy_from_slice(b);
        }
        Ok(b.len() as i64)
    })
}

/// Test hook: sleeps `ms` milliseconds on the calling thread, then fills the buffer with `v`,
/// so a test can observe that calls do not block Node's event loop.
#[no_mangle]
pub extern "C" fn stillpoint_vhdx_selftest_sleep_fill(ms: i64, buf: *mut u8, buflen: i64, v: i32, err: *mut u8, errlen: i64) -> i64 {
    guard(err, errlen, || {
        let s = out_slice(buf, buflen, 0, buflen)?;
        if !s.is_empty() {
            s[0] = v as u8;
        }
        std::thread::sleep(std::time::Duration::from_millis(ms.clamp(0, 60_000) as u64));
        s.fill(v as u8);
        Ok(buf as i64)
    })
}
