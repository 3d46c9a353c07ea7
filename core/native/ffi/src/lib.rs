//! The C ABI conventions Stillpoint's native libraries (core/native, plugins/vhdx/native) share,
//! standard library only. Every exported function returns an `i64`: >= 0 on success (a handle, a
//! count or a size), or a negative error code with a NUL-terminated UTF-8 message written into the
//! caller's `err` buffer. Panics never cross the ABI. core/util/native.ts is the other side.
use std::collections::HashMap;
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// An error a native call returns: its (positive) code and its message.
pub trait FfiError {
    fn code(&self) -> i64;
    fn message(&self) -> &str;
}

/// Write `msg` NUL-terminated into the caller's error buffer (cut to fit).
pub fn write_err(err: *mut u8, errlen: i64, msg: &str) {
    if err.is_null() || errlen <= 0 {
        return;
    }
    let b = msg.as_bytes();
    let n = b.len().min(errlen as usize - 1);
    // SAFETY: the caller passes a buffer of errlen bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(b.as_ptr(), err, n);
        *err.add(n) = 0;
    }
}

/// Run `f`: its value, or `-code` with the message in `err`; a panic becomes `-panic_code` with
/// `panic_text` and the panic's message.
pub fn guard<E: FfiError>(err: *mut u8, errlen: i64, panic_code: i64, panic_text: &str, f: impl FnOnce() -> Result<i64, E>) -> i64 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            write_err(err, errlen, e.message());
            -e.code()
        }
        Err(p) => {
            let m = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            write_err(err, errlen, &format!("{panic_text}: {m}"));
            -panic_code
        }
    }
}

/// A NUL-terminated string argument, or None for a null pointer.
pub fn cstr(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: ffi-rs passes NUL-terminated strings.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// Where the caller's buffer range [off, off + len) of a buffer of `buflen` bytes starts, checked;
/// a dangling (never used) pointer for an empty range. A pointer, not a slice, for callers whose
/// source and destination may be the same memory.
pub fn range_ptr(buf: *mut u8, buflen: i64, off: i64, len: i64) -> Result<*mut u8, String> {
    if buflen < 0 || off < 0 || len < 0 || off.checked_add(len).map_or(true, |e| e > buflen) {
        return Err(format!("buffer range [{off}, {off}+{len}) does not fit a buffer of {buflen} bytes"));
    }
    if len == 0 {
        // Nothing is read or written there (an empty buffer may have no address at all).
        return Ok(std::ptr::NonNull::dangling().as_ptr());
    }
    if buf.is_null() {
        return Err("buffer pointer is null".into());
    }
    Ok(buf.wrapping_add(off as usize))
}

/// The caller's buffer range [off, off + len) of a buffer of `buflen` bytes, checked.
pub fn buffer<'a>(buf: *mut u8, buflen: i64, off: i64, len: i64) -> Result<&'a mut [u8], String> {
    let start = range_ptr(buf, buflen, off, len)?;
    if len == 0 {
        return Ok(&mut []);
    }
    // SAFETY: the caller guarantees buf points to buflen bytes that stay alive during the call.
    Ok(unsafe { std::slice::from_raw_parts_mut(start, len as usize) })
}

/// Open objects behind the `i64` handles the C ABI hands out.
pub struct Handles<T> {
    map: OnceLock<Mutex<HashMap<i64, Arc<T>>>>,
    next: AtomicI64,
}

impl<T> Handles<T> {
    pub const fn new() -> Handles<T> {
        Handles { map: OnceLock::new(), next: AtomicI64::new(1) }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<T>>> {
        self.map.get_or_init(|| Mutex::new(HashMap::new())).lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep `value`; returns its handle.
    pub fn insert(&self, value: T) -> i64 {
        let h = self.next.fetch_add(1, Ordering::Relaxed);
        self.map().insert(h, Arc::new(value));
        h
    }

    /// The object behind `h`, if it is open.
    pub fn get(&self, h: i64) -> Option<Arc<T>> {
        self.map().get(&h).cloned()
    }

    /// Forget `h`; the object goes once no call uses it any more.
    pub fn remove(&self, h: i64) -> Option<Arc<T>> {
        self.map().remove(&h)
    }
}

impl<T> Default for Handles<T> {
    fn default() -> Self {
        Handles::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E(i64, String);
    impl FfiError for E {
        fn code(&self) -> i64 {
            self.0
        }
        fn message(&self) -> &str {
            &self.1
        }
    }

    #[test]
    fn errors_panics_and_handles() {
        let mut buf = [0xffu8; 8];
        assert_eq!(guard(buf.as_mut_ptr(), 8, 7, "bug", || Err::<i64, _>(E(28, "no space left".into()))), -28);
        assert_eq!(&buf, b"no spac\0");
        assert_eq!(guard(buf.as_mut_ptr(), 8, 7, "bug", || -> Result<i64, E> { panic!("x") }), -7);
        assert_eq!(guard(std::ptr::null_mut(), 0, 7, "bug", || Ok::<i64, E>(5)), 5);
        static H: Handles<String> = Handles::new();
        let h = H.insert("a".into());
        assert_eq!(H.get(h).as_deref().map(String::as_str), Some("a"));
        assert!(H.remove(h).is_some());
        assert!(H.get(h).is_none());
        assert!(cstr(std::ptr::null()).is_none());
        let mut data = [1u8, 2, 3, 4];
        assert_eq!(buffer(data.as_mut_ptr(), 4, 1, 2).unwrap(), &[2, 3]);
        assert!(buffer(data.as_mut_ptr(), 4, 3, 2).unwrap_err().contains("does not fit"));
        assert!(buffer(std::ptr::null_mut(), 4, 0, 1).unwrap_err().contains("null"));
    }
}
