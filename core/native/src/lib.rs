//! Stillpoint's direct-I/O file access, standard library only, with a C ABI for ffi-rs: a writer
//! and a file's data extents (SEEK_DATA / SEEK_HOLE); AES-256-GCM into the caller's buffers
//! through the process's own OpenSSL (gcm.rs); and BLAKE3 through its official C implementation,
//! compiled in (blake3.rs, build.rs).
//!
//! Large sequential writes (pack files, restored disks) go around the page cache with
//! `O_DIRECT`: the kernel neither copies them into cache pages nor throttles the writer while it
//! flushes them, so a backup or a restore spends its CPU on hashing, compression and encryption.
//! O_DIRECT needs aligned memory, offsets and lengths: bytes in page-aligned memory (see
//! `stillpoint_io_align_offset`, which callers use to place their large buffers) are written as
//! they are, other bytes are copied into a page-aligned scratch buffer first; the unaligned tail
//! of a write goes through a second, ordinary descriptor. Where the filesystem refuses O_DIRECT (tmpfs, some FUSE), every write is ordinary.
//! (Reads stay ordinary: a restore reads packs that may be in the page cache, and readahead serves
//! it well when they are not; measured with scripts/bench/repository-vs-restic-borg.ts.)
//!
//! Every exported function returns an `i64`: >= 0 on success, or `-errno` (an OS error, e.g.
//! -28 for ENOSPC) with a NUL-terminated UTF-8 message in the caller's `err` buffer. Errors that
//! are not the OS's are -22 (EINVAL). Panics never cross the ABI.
use std::ffi::c_char;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use stillpoint_ffi::{buffer, cstr, range_ptr, Handles};

pub mod blake3;
pub mod gcm;

/// Alignment of memory, offsets and lengths for O_DIRECT (covers 512-byte and 4 KiB devices).
pub const ALIGN: usize = 4096;
/// Size of one scratch buffer: a write is copied and written in pieces of at most this much.
pub const SCRATCH: usize = 8 << 20;

#[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "x86", target_arch = "riscv64", target_arch = "s390x")))]
const O_DIRECT: i32 = 0o40000;
#[cfg(all(target_os = "linux", any(target_arch = "aarch64", target_arch = "arm", target_arch = "powerpc64")))]
const O_DIRECT: i32 = 0o200000;
#[cfg(not(target_os = "linux"))]
const O_DIRECT: i32 = 0;
const EINVAL: i32 = 22;

/// A page-aligned heap buffer.
struct Aligned {
    ptr: *mut u8,
    len: usize,
}
// SAFETY: the buffer is owned memory, used by one thread at a time (taken from the pool).
unsafe impl Send for Aligned {}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let layout = std::alloc::Layout::from_size_align(len, ALIGN).expect("layout");
        // SAFETY: non-zero size, valid alignment.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Aligned { ptr, len }
    }
    fn slice(&mut self, n: usize) -> &mut [u8] {
        // SAFETY: n <= len, the memory is ours.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, n.min(self.len)) }
    }
}
impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in `new`.
        unsafe { std::alloc::dealloc(self.ptr, std::alloc::Layout::from_size_align(self.len, ALIGN).unwrap()) }
    }
}

/// Scratch buffers kept for reuse: touching new memory for every write costs page faults.
fn pool() -> &'static Mutex<Vec<Aligned>> {
    static P: OnceLock<Mutex<Vec<Aligned>>> = OnceLock::new();
    P.get_or_init(|| Mutex::new(Vec::new()))
}
fn take_scratch() -> Aligned {
    pool().lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_else(|| Aligned::new(SCRATCH))
}
fn give_scratch(b: Aligned) {
    let mut p = pool().lock().unwrap_or_else(|p| p.into_inner());
    if p.len() < 8 {
        p.push(b);
    }
}

/// An open file: the ordinary descriptor, and the O_DIRECT one while the filesystem takes it.
pub struct Writer {
    plain: File,
    direct: Option<File>,
    direct_ok: AtomicBool,
}

#[derive(Debug)]
pub struct Error {
    pub errno: i32,
    pub msg: String,
}
impl Error {
    fn os(e: io::Error, what: &str) -> Error {
        Error { errno: e.raw_os_error().unwrap_or(EINVAL), msg: format!("{what}: {e}") }
    }
    fn invalid(msg: impl Into<String>) -> Error {
        Error { errno: EINVAL, msg: msg.into() }
    }
}
pub type Result<T> = std::result::Result<T, Error>;

/// flags: 1 create (fails if the file exists), 2 create or truncate; neither: open an existing file.
pub const CREATE_NEW: i32 = 1;
pub const TRUNCATE: i32 = 2;
/// flags: 4 never use O_DIRECT.
pub const NO_DIRECT: i32 = 4;

impl Writer {
    pub fn open(path: &str, flags: i32, mode: u32) -> Result<Writer> {
        let mut o = OpenOptions::new();
        o.write(true).mode(mode);
        if flags & CREATE_NEW != 0 {
            o.create_new(true);
        } else if flags & TRUNCATE != 0 {
            o.create(true).truncate(true);
        }
        let plain = o.open(path).map_err(|e| Error::os(e, &format!("cannot open {path} for writing")))?;
        let direct = if flags & NO_DIRECT != 0 || O_DIRECT == 0 {
            None
        } else {
            // The file exists now: a second descriptor, with O_DIRECT when the filesystem allows it.
            OpenOptions::new().write(true).custom_flags(O_DIRECT).open(path).ok()
        };
        let ok = direct.is_some();
        Ok(Writer { plain, direct, direct_ok: AtomicBool::new(ok) })
    }

    pub fn is_direct(&self) -> bool {
        self.direct_ok.load(Ordering::Relaxed)
    }

    /// Write all of `data` at `offset`.
    pub fn write_at(&self, data: &[u8], offset: u64) -> Result<()> {
        let mut done = 0usize;
        if self.is_direct() && offset % ALIGN as u64 == 0 {
            let aligned = data.len() / ALIGN * ALIGN;
            let r = if data.as_ptr() as usize % ALIGN == 0 {
                // Already in page-aligned memory: no copy.
                write_all_at(self.direct.as_ref().expect("direct descriptor"), &data[..aligned], offset)
            } else {
                let mut scratch = take_scratch();
                let r = self.write_direct(&mut scratch, &data[..aligned], offset);
                give_scratch(scratch);
                r
            };
            match r {
                Ok(()) => done = aligned,
                Err(e) if e.errno == EINVAL => {
                    // The filesystem took the O_DIRECT open but not the write: ordinary writes from now on.
                    self.direct_ok.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        write_all_at(&self.plain, &data[done..], offset + done as u64)
    }

    fn write_direct(&self, scratch: &mut Aligned, data: &[u8], offset: u64) -> Result<()> {
        let f = self.direct.as_ref().expect("direct descriptor");
        let mut at = 0usize;
        while at < data.len() {
            let n = (data.len() - at).min(SCRATCH);
            let s = scratch.slice(n);
            s.copy_from_slice(&data[at..at + n]);
            write_all_at(f, s, offset + at as u64)?;
            at += n;
        }
        Ok(())
    }

    pub fn set_len(&self, len: u64) -> Result<()> {
        self.plain.set_len(len).map_err(|e| Error::os(e, "cannot set the file's length"))
    }

    pub fn sync(&self) -> Result<()> {
        self.plain.sync_all().map_err(|e| Error::os(e, "cannot flush the file to stable storage (fsync)"))
    }
}

fn write_all_at(f: &File, mut buf: &[u8], mut offset: u64) -> Result<()> {
    while !buf.is_empty() {
        match f.write_at(buf, offset) {
            Ok(0) => return Err(Error { errno: 5, msg: "write returned 0 bytes".into() }),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::os(e, &format!("write of {} bytes at offset {offset} failed", buf.len()))),
        }
    }
    Ok(())
}


extern "C" {
    fn lseek(fd: i32, offset: i64, whence: i32) -> i64;
}
const SEEK_DATA: i32 = 3;
const SEEK_HOLE: i32 = 4;
const ENXIO: i32 = 6;

/// The data extents of a file, `(offset, length)`, from SEEK_DATA / SEEK_HOLE: what lies between
/// them are holes, which read as zeros. A filesystem without hole support reports one extent.
pub fn data_extents(path: &str) -> Result<Vec<(u64, u64)>> {
    use std::os::unix::io::AsRawFd;
    let f = File::open(path).map_err(|e| Error::os(e, &format!("cannot open {path}")))?;
    let size = f.metadata().map_err(|e| Error::os(e, &format!("cannot stat {path}")))?.len();
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: u64 = 0;
    while pos < size {
        // SAFETY: lseek on a descriptor we own.
        let data = unsafe { lseek(fd, pos as i64, SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(ENXIO) {
                break; // only a hole from here to the end
            }
            return Err(Error::os(e, &format!("SEEK_DATA on {path} failed")));
        }
        // SAFETY: as above.
        let hole = unsafe { lseek(fd, data, SEEK_HOLE) };
        if hole < 0 {
            return Err(Error::os(io::Error::last_os_error(), &format!("SEEK_HOLE on {path} failed")));
        }
        let (start, end) = (data as u64, (hole as u64).min(size));
        if end > start {
            out.push((start, end - start));
        }
        pos = end.max(start + 1);
    }
    Ok(out)
}

// ---- C ABI ---------------------------------------------------------------------------------

impl stillpoint_ffi::FfiError for Error {
    fn code(&self) -> i64 {
        self.errno as i64
    }
    fn message(&self) -> &str {
        &self.msg
    }
}

static HANDLES: Handles<Writer> = Handles::new();

fn get(h: i64) -> Result<Arc<Writer>> {
    HANDLES.get(h).ok_or_else(|| not_open(h))
}

fn not_open(h: i64) -> Error {
    Error::invalid(format!("file handle {h} is not open (closed already?)"))
}

fn guard(err: *mut u8, errlen: i64, f: impl FnOnce() -> Result<i64>) -> i64 {
    stillpoint_ffi::guard(err, errlen, EINVAL as i64, "internal error in the direct-I/O library (a bug; please report it)", f)
}

fn c_path(path: *const c_char) -> Result<String> {
    cstr(path).ok_or_else(|| Error::invalid("path is missing"))
}

/// Open `path` for writing (flags: CREATE_NEW | TRUNCATE | NO_DIRECT); returns a handle.
#[no_mangle]
pub extern "C" fn stillpoint_io_open(path: *const c_char, flags: i32, mode: i32, err: *mut u8, errlen: i64) -> i64 {
    guard(err, errlen, || {
        let path = c_path(path)?;
        Ok(HANDLES.insert(Writer::open(&path, flags, mode as u32)?))
    })
}

/// Write `len` bytes of `buf` (from `bufoff`) at file offset `off`; returns `len`.
#[no_mangle]
pub extern "C" fn stillpoint_io_write(h: i64, off: i64, buf: *const u8, buflen: i64, bufoff: i64, len: i64, err: *mut u8, errlen: i64) -> i64 {
    guard(err, errlen, || {
        if off < 0 {
            return Err(Error::invalid(format!("negative file offset {off}")));
        }
        let data = buffer(buf as *mut u8, buflen, bufoff, len).map_err(Error::invalid)?;
        if !data.is_empty() {
            get(h)?.write_at(data, off as u64)?;
        }
        Ok(len)
    })
}

/// How many bytes from the start of `buf` the first page-aligned byte lies (0 to ALIGN - 1): a
/// caller that allocates ALIGN bytes more and starts its buffer there has its writes go to the
/// device without a copy.
#[no_mangle]
pub extern "C" fn stillpoint_io_align_offset(buf: *const u8, buflen: i64, err: *mut u8, errlen: i64) -> i64 {
    guard(err, errlen, || {
        if buf.is_null() || buflen < 0 {
            return Err(Error::invalid("no buffer"));
        }
        Ok(((ALIGN - buf as usize % ALIGN) % ALIGN) as i64)
    })
}

/// Set the file's length.
#[no_mangle]
pub extern "C" fn stillpoint_io_set_len(h: i64, len: i64, err: *mut u8, errlen: i64) -> i64 {
    guard(err, errlen, || {
        if len < 0 {
            return Err(Error::invalid("negative length"));
        }
        get(h)?.set_len(len as u64)?;
        Ok(0)
    })
}

/// fsync.
#[no_mangle]
pub extern "C" fn stillpoint_io_sync(h: i64, err: *mut u8, errlen: i64) -> i64 {
    guard(err, errlen, || {
        get(h)?.sync()?;
        Ok(0)
    })
}

/// 1 while writes go around the page cache, 0 when they are ordinary.
#[no_mangle]
pub extern "C" fn stillpoint_io_is_direct(h: i64, err: *mut u8, errlen: i64) -> i64 {
    guard(err, errlen, || Ok(get(h)?.is_direct() as i64))
}

/// Close the handle (the descriptors close once no call uses them).
#[no_mangle]
pub extern "C" fn stillpoint_io_close(h: i64, err: *mut u8, errlen: i64) -> i64 {
    guard(err, errlen, || {
        HANDLES
            .remove(h)
            .map(|_| 0)
            .ok_or_else(|| not_open(h))
    })
}


/// The data extents of `path` as (offset, length) pairs of i64 LE in `out` (room for `cap`
/// pairs); returns how many there are (call again with more room when that is more than `cap`).
#[no_mangle]
pub extern "C" fn stillpoint_io_extents(path: *const c_char, out: *mut u8, outlen: i64, err: *mut u8, errlen: i64) -> i64 {
    guard(err, errlen, || {
        let path = c_path(path)?;
        let extents = data_extents(&path)?;
        let cap = (outlen.max(0) as usize) / 16;
        if extents.len() <= cap && !out.is_null() {
            // SAFETY: the caller passes outlen bytes.
            let o = unsafe { std::slice::from_raw_parts_mut(out, extents.len() * 16) };
            for (i, (a, b)) in extents.iter().enumerate() {
                o[i * 16..i * 16 + 8].copy_from_slice(&(*a as i64).to_le_bytes());
                o[i * 16 + 8..i * 16 + 16].copy_from_slice(&(*b as i64).to_le_bytes());
            }
        }
        Ok(extents.len() as i64)
    })
}

/// BLAKE3 of `len` bytes at `off` in `src` into `out` (32 bytes), keyed with `key` (32 bytes;
/// `keylen` 0: plain). Returns 32.
#[no_mangle]
pub extern "C" fn stillpoint_io_blake3(key: *const u8, keylen: i64, src: *const u8, srclen: i64, srcoff: i64, len: i64, out: *mut u8, outlen: i64, err: *mut u8, errlen: i64) -> i64 {
    guard(err, errlen, || {
        let key = match keylen {
            0 => None,
            32 => Some(<&[u8; blake3::KEY_LEN]>::try_from(&*buffer(key as *mut u8, keylen, 0, keylen).map_err(Error::invalid)?).map_err(|_| Error::invalid("key"))?),
            n => return Err(Error::invalid(format!("a BLAKE3 key has 32 bytes, not {n}"))),
        };
        let data = buffer(src as *mut u8, srclen, srcoff, len).map_err(Error::invalid)?;
        let dst = buffer(out, outlen, 0, blake3::OUT_LEN as i64).map_err(Error::invalid)?;
        dst.copy_from_slice(&blake3::hash(key, data));
        Ok(blake3::OUT_LEN as i64)
    })
}

/// 1 when the process has OpenSSL's AES-256-GCM for `gcm_seal` and `gcm_open` (gcm.rs), else 0.
#[no_mangle]
pub extern "C" fn stillpoint_io_gcm_available(err: *mut u8, errlen: i64) -> i64 {
    guard(err, errlen, || Ok(gcm::available() as i64))
}

/// The key, nonce and additional data of a GCM call, from `params`: key (32) | nonce (12) | aad.
fn gcm_params<'a>(params: *const u8, paramslen: i64) -> Result<(&'a [u8], &'a [u8], &'a [u8])> {
    let all = buffer(params as *mut u8, paramslen, 0, paramslen).map_err(Error::invalid)?;
    if all.len() < gcm::KEY_LEN + gcm::NONCE_LEN {
        return Err(Error::invalid(format!("GCM parameters of {} bytes: a key and a nonce take {}", all.len(), gcm::KEY_LEN + gcm::NONCE_LEN)));
    }
    let (key, rest) = all.split_at(gcm::KEY_LEN);
    let (nonce, aad) = rest.split_at(gcm::NONCE_LEN);
    Ok((key, nonce, aad))
}

/// Where `len` bytes (and, with `tag`, the 16-byte tag after them) lie in a caller's buffer, checked.
fn gcm_range(buf: *const u8, buflen: i64, off: i64, len: i64, tag: bool) -> Result<*mut u8> {
    let span = len.checked_add(if tag { gcm::TAG_LEN as i64 } else { 0 }).ok_or_else(|| Error::invalid("length overflows"))?;
    range_ptr(buf as *mut u8, buflen, off, span).map_err(Error::invalid)
}

fn gcm_error(e: gcm::GcmError) -> Error {
    match e {
        gcm::GcmError::Authentication => Error { errno: gcm::EBADMSG as i32, msg: "authentication failed: the data or its tag is damaged, or the key is another".into() },
        gcm::GcmError::Unavailable => Error::invalid("OpenSSL's AES-256-GCM is not available in this process"),
        gcm::GcmError::BadArguments(m) => Error::invalid(m),
        gcm::GcmError::OpenSsl(f) => Error::invalid(format!("OpenSSL's {f} failed")),
    }
}

/// Both directions of AES-256-GCM over the caller's buffers: the tag follows the ciphertext, in
/// `dst` when sealing and in `src` when opening.
fn gcm_call(seal: bool, params: *const u8, paramslen: i64, src: *const u8, srclen: i64, srcoff: i64, dst: *mut u8, dstlen: i64, dstoff: i64, len: i64, err: *mut u8, errlen: i64) -> i64 {
    guard(err, errlen, || {
        let (key, nonce, aad) = gcm_params(params, paramslen)?;
        let from = gcm_range(src, srclen, srcoff, len, !seal)?;
        let to = gcm_range(dst, dstlen, dstoff, len, seal)?;
        let n = len as usize;
        // SAFETY: both ranges (and the tag after the ciphertext) were checked against the caller's
        // buffers; when opening, the tag is copied before anything is written.
        let done = unsafe {
            if seal {
                gcm::seal_raw(key, nonce, aad, from, to, n, to.add(n))
            } else {
                gcm::open_raw(key, nonce, aad, from, to, n, from.add(n))
            }
        };
        done.map_err(gcm_error)?;
        Ok(len)
    })
}

/// AES-256-GCM: encrypt `len` bytes of `src` (from `srcoff`) into `dst` at `dstoff`, the 16-byte
/// tag right after them (`dst` needs `len + 16` bytes there). `params`: key | nonce | additional
/// data. `src` and `dst` may be the same buffer, also with overlapping ranges. Returns `len`.
#[no_mangle]
pub extern "C" fn stillpoint_io_gcm_seal(params: *const u8, paramslen: i64, src: *const u8, srclen: i64, srcoff: i64, dst: *mut u8, dstlen: i64, dstoff: i64, len: i64, err: *mut u8, errlen: i64) -> i64 {
    gcm_call(true, params, paramslen, src, srclen, srcoff, dst, dstlen, dstoff, len, err, errlen)
}

/// AES-256-GCM: decrypt `len` bytes of `src` (from `srcoff`, the 16-byte tag right after them) into
/// `dst` at `dstoff`. Returns `len`, or -74 (EBADMSG) when the data does not authenticate (then
/// `dst`'s range holds nothing usable).
#[no_mangle]
pub extern "C" fn stillpoint_io_gcm_open(params: *const u8, paramslen: i64, src: *const u8, srclen: i64, srcoff: i64, dst: *mut u8, dstlen: i64, dstoff: i64, len: i64, err: *mut u8, errlen: i64) -> i64 {
    gcm_call(false, params, paramslen, src, srclen, srcoff, dst, dstlen, dstoff, len, err, errlen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> String {
        let dir = std::env::temp_dir().join(format!("stillpoint-io-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        dir.to_string_lossy().into_owned()
    }

    #[test]
    fn writes_aligned_unaligned_and_tail() {
        let path = tmp("mixed");
        let w = Writer::open(&path, CREATE_NEW, 0o600).unwrap();
        let a: Vec<u8> = (0..(3 * ALIGN + 100)).map(|i| (i % 251) as u8).collect();
        w.write_at(&a, 0).unwrap();
        let b: Vec<u8> = (0..5000).map(|i| (i % 13) as u8).collect();
        w.write_at(&b, 7).unwrap(); // unaligned offset: ordinary write
        let c = vec![9u8; SCRATCH + ALIGN + 1]; // more than one scratch buffer
        w.write_at(&c, 4 * ALIGN as u64).unwrap();
        w.sync().unwrap();
        drop(w);
        let got = std::fs::read(&path).unwrap();
        let mut want = a.clone();
        want[7..7 + 5000].copy_from_slice(&b);
        want.resize(4 * ALIGN, 0);
        want.extend_from_slice(&c);
        assert_eq!(got.len(), want.len());
        assert!(got == want);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn writes_from_page_aligned_memory_without_scratch() {
        // /var/tmp: a disk filesystem, where O_DIRECT is taken (tmpfs refuses it).
        let path = format!("/var/tmp/stillpoint-io-aligned-{}", std::process::id());
        let _ = std::fs::remove_file(&path);
        let mut mem = Aligned::new(SCRATCH + 2 * ALIGN);
        let n = SCRATCH + ALIGN + 10; // more than a scratch buffer, with an unaligned tail
        for (i, b) in mem.slice(n).iter_mut().enumerate() {
            *b = (i % 241) as u8;
        }
        let data = mem.slice(n).to_vec();
        let w = Writer::open(&path, CREATE_NEW, 0o600).unwrap();
        let at = mem.slice(n);
        assert_eq!(stillpoint_io_align_offset(at.as_ptr(), n as i64, std::ptr::null_mut(), 0), 0);
        assert_eq!(stillpoint_io_align_offset(at[1..].as_ptr(), n as i64, std::ptr::null_mut(), 0), (ALIGN - 1) as i64);
        w.write_at(at, ALIGN as u64).unwrap();
        w.sync().unwrap();
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), ALIGN + n);
        assert!(got[..ALIGN].iter().all(|&b| b == 0));
        assert!(got[ALIGN..] == data[..]);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn extents_of_a_sparse_file() {
        let path = format!("/var/tmp/stillpoint-io-sparse-{}", std::process::id());
        let f = File::create(&path).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_at(&[1u8; 4096], 8 << 20).unwrap();
        f.write_at(&[2u8; 4096], 40 << 20).unwrap();
        f.sync_all().unwrap();
        let e = data_extents(&path).unwrap();
        let covered: u64 = e.iter().map(|x| x.1).sum();
        assert!(e.iter().any(|&(o, l)| o <= 8 << 20 && o + l >= (8 << 20) + 4096));
        assert!(e.iter().any(|&(o, l)| o <= 40 << 20 && o + l >= (40 << 20) + 4096));
        // A filesystem with holes reports far less than the whole file.
        assert!(covered <= 64 << 20);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn create_new_refuses_existing() {
        let path = tmp("exists");
        std::fs::write(&path, b"x").unwrap();
        let e = Writer::open(&path, CREATE_NEW, 0o600).err().unwrap();
        assert_eq!(e.errno, 17);
        std::fs::remove_file(&path).unwrap();
    }
}
