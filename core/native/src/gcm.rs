//! AES-256-GCM in place, through the OpenSSL that the running process already has: Node.js
//! exports its OpenSSL's symbols (for native addons), and a Node.js linked against the system's
//! libcrypto has it loaded; both are found with `dlsym(RTLD_DEFAULT, ...)`. No cryptography is
//! written here: this only lets the caller say where the output goes.
//!
//! Why: node:crypto's `Cipher.update` returns a new buffer for every call. For a 256 KiB chunk
//! that buffer comes as fresh pages from the kernel (above malloc's mmap threshold), which the
//! kernel clears first; on a VM that hands freed memory back to its host this cost as much as the
//! encryption itself (perf: `clear_page_erms` under `CipherBase::Update`). Here the ciphertext
//! overwrites the plaintext in the caller's buffer, which the caller reuses.
//!
//! Where the symbols are missing (a Node.js built with another TLS library), `available` says no
//! and the caller keeps using node:crypto; the blobs are the same either way.
use std::ffi::{c_char, c_int, c_void};
use std::sync::OnceLock;

/// The errno a call that fails authentication returns (negated), as the OS's EBADMSG.
pub const EBADMSG: i64 = 74;

const EVP_CTRL_GCM_SET_IVLEN: c_int = 0x9;
const EVP_CTRL_GCM_GET_TAG: c_int = 0x10;
const EVP_CTRL_GCM_SET_TAG: c_int = 0x11;
pub const TAG_LEN: usize = 16;
pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 12;

extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

type Ctx = *mut c_void;
type InitFn = unsafe extern "C" fn(Ctx, *const c_void, *mut c_void, *const u8, *const u8) -> c_int;
type UpdateFn = unsafe extern "C" fn(Ctx, *mut u8, *mut c_int, *const u8, c_int) -> c_int;
type FinalFn = unsafe extern "C" fn(Ctx, *mut u8, *mut c_int) -> c_int;

/// The EVP functions used, resolved once.
struct Evp {
    ctx_new: unsafe extern "C" fn() -> Ctx,
    ctx_free: unsafe extern "C" fn(Ctx),
    ctx_ctrl: unsafe extern "C" fn(Ctx, c_int, c_int, *mut c_void) -> c_int,
    aes_256_gcm: unsafe extern "C" fn() -> *const c_void,
    encrypt_init: InitFn,
    encrypt_update: UpdateFn,
    encrypt_final: FinalFn,
    decrypt_init: InitFn,
    decrypt_update: UpdateFn,
    decrypt_final: FinalFn,
}

fn symbol(name: &str) -> Option<*mut c_void> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: RTLD_DEFAULT (null on glibc and musl) searches the process's global symbols.
    let p = unsafe { dlsym(std::ptr::null_mut(), c.as_ptr()) };
    (!p.is_null()).then_some(p)
}

fn evp() -> Option<&'static Evp> {
    static EVP: OnceLock<Option<Evp>> = OnceLock::new();
    EVP.get_or_init(|| {
        // SAFETY: each symbol is OpenSSL's function of that name, with the signature declared in
        // <openssl/evp.h> (stable from OpenSSL 1.1 to 3.x).
        unsafe {
            Some(Evp {
                ctx_new: std::mem::transmute::<*mut c_void, _>(symbol("EVP_CIPHER_CTX_new")?),
                ctx_free: std::mem::transmute::<*mut c_void, _>(symbol("EVP_CIPHER_CTX_free")?),
                ctx_ctrl: std::mem::transmute::<*mut c_void, _>(symbol("EVP_CIPHER_CTX_ctrl")?),
                aes_256_gcm: std::mem::transmute::<*mut c_void, _>(symbol("EVP_aes_256_gcm")?),
                encrypt_init: std::mem::transmute::<*mut c_void, _>(symbol("EVP_EncryptInit_ex")?),
                encrypt_update: std::mem::transmute::<*mut c_void, _>(symbol("EVP_EncryptUpdate")?),
                encrypt_final: std::mem::transmute::<*mut c_void, _>(symbol("EVP_EncryptFinal_ex")?),
                decrypt_init: std::mem::transmute::<*mut c_void, _>(symbol("EVP_DecryptInit_ex")?),
                decrypt_update: std::mem::transmute::<*mut c_void, _>(symbol("EVP_DecryptUpdate")?),
                decrypt_final: std::mem::transmute::<*mut c_void, _>(symbol("EVP_DecryptFinal_ex")?),
            })
        }
    })
    .as_ref()
}

/// Whether the process has OpenSSL's AES-256-GCM.
pub fn available() -> bool {
    evp().is_some()
}

/// Why a call failed: the blob did not authenticate, or OpenSSL refused (a bug or a broken library).
#[derive(Debug, PartialEq)]
pub enum GcmError {
    Unavailable,
    BadArguments(String),
    Authentication,
    OpenSsl(&'static str),
}

/// One cipher context, freed on every path.
struct Context<'a> {
    evp: &'a Evp,
    ctx: Ctx,
}

impl<'a> Context<'a> {
    fn new(evp: &'a Evp) -> Result<Context<'a>, GcmError> {
        // SAFETY: EVP_CIPHER_CTX_new takes no arguments; null means out of memory.
        let ctx = unsafe { (evp.ctx_new)() };
        if ctx.is_null() {
            return Err(GcmError::OpenSsl("EVP_CIPHER_CTX_new"));
        }
        Ok(Context { evp, ctx })
    }

    /// Set up for `encrypt` or decrypt with `key` and `nonce`, then take `aad`.
    fn start(&self, encrypt: bool, key: &[u8], nonce: &[u8], aad: &[u8]) -> Result<(), GcmError> {
        let e = self.evp;
        let init = if encrypt { e.encrypt_init } else { e.decrypt_init };
        // SAFETY: the context is live; the cipher is OpenSSL's static AES-256-GCM; key and nonce
        // have the lengths checked by the caller (KEY_LEN, NONCE_LEN).
        unsafe {
            if init(self.ctx, (e.aes_256_gcm)(), std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) != 1 {
                return Err(GcmError::OpenSsl("EVP_CipherInit_ex"));
            }
            if (e.ctx_ctrl)(self.ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN as c_int, std::ptr::null_mut()) != 1 {
                return Err(GcmError::OpenSsl("EVP_CTRL_GCM_SET_IVLEN"));
            }
            if init(self.ctx, std::ptr::null(), std::ptr::null_mut(), key.as_ptr(), nonce.as_ptr()) != 1 {
                return Err(GcmError::OpenSsl("EVP_CipherInit_ex (key)"));
            }
        }
        if !aad.is_empty() {
            self.update(encrypt, std::ptr::null_mut(), aad.as_ptr(), aad.len())?;
        }
        Ok(())
    }

    /// Run `len` bytes from `input` to `output` (the same place is allowed: GCM works in place).
    fn update(&self, encrypt: bool, output: *mut u8, input: *const u8, len: usize) -> Result<(), GcmError> {
        let f = if encrypt { self.evp.encrypt_update } else { self.evp.decrypt_update };
        // Pieces that fit a c_int.
        let mut done = 0usize;
        while done < len {
            let n = (len - done).min(1 << 30);
            let mut out_len: c_int = 0;
            let out = if output.is_null() { output } else { output.wrapping_add(done) };
            // SAFETY: input and output (unless null, for AAD) point to len bytes owned by the caller.
            if unsafe { f(self.ctx, out, &mut out_len, input.wrapping_add(done), n as c_int) } != 1 || (!output.is_null() && out_len as usize != n) {
                return Err(GcmError::OpenSsl("EVP_CipherUpdate"));
            }
            done += n;
        }
        Ok(())
    }
}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        // SAFETY: the context came from EVP_CIPHER_CTX_new and is freed once.
        unsafe { (self.evp.ctx_free)(self.ctx) }
    }
}

fn check(key: &[u8], nonce: &[u8]) -> Result<&'static Evp, GcmError> {
    if key.len() != KEY_LEN || nonce.len() != NONCE_LEN {
        return Err(GcmError::BadArguments(format!("AES-256-GCM needs a {KEY_LEN}-byte key and a {NONCE_LEN}-byte nonce, got {} and {}", key.len(), nonce.len())));
    }
    evp().ok_or(GcmError::Unavailable)
}

/// Encrypt `len` bytes at `src` into `dst` with `key`, `nonce` and additional data `aad`, and
/// write the tag to `tag`. `src` and `dst` may be the same place, or overlap (then the bytes are
/// moved to `dst` first and encrypted there).
///
/// # Safety
/// `src` must be readable and `dst` writable for `len` bytes, `tag` writable for TAG_LEN bytes
/// and not within `dst`'s range.
pub unsafe fn seal_raw(key: &[u8], nonce: &[u8], aad: &[u8], src: *const u8, dst: *mut u8, len: usize, tag: *mut u8) -> Result<(), GcmError> {
    let ctx = Context::new(check(key, nonce)?)?;
    ctx.start(true, key, nonce, aad)?;
    let src = in_place_if_overlapping(src, dst, len);
    ctx.update(true, dst, src, len)?;
    let mut out_len: c_int = 0;
    let mut rest = [0u8; 32];
    // GCM's final writes nothing (a stream mode); `rest` has room anyway.
    if (ctx.evp.encrypt_final)(ctx.ctx, rest.as_mut_ptr(), &mut out_len) != 1 || out_len != 0 {
        return Err(GcmError::OpenSsl("EVP_EncryptFinal_ex"));
    }
    if (ctx.evp.ctx_ctrl)(ctx.ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN as c_int, tag.cast()) != 1 {
        return Err(GcmError::OpenSsl("EVP_CTRL_GCM_GET_TAG"));
    }
    Ok(())
}

/// Decrypt `len` bytes at `src` into `dst` and check them against `tag` (same rules as `seal_raw`).
/// On `Authentication` the bytes at `dst` are undefined: the caller must not use them.
///
/// # Safety
/// As for `seal_raw`; `tag` must be readable for TAG_LEN bytes.
pub unsafe fn open_raw(key: &[u8], nonce: &[u8], aad: &[u8], src: *const u8, dst: *mut u8, len: usize, tag: *const u8) -> Result<(), GcmError> {
    let ctx = Context::new(check(key, nonce)?)?;
    let mut expected = [0u8; TAG_LEN];
    std::ptr::copy_nonoverlapping(tag, expected.as_mut_ptr(), TAG_LEN);
    ctx.start(false, key, nonce, aad)?;
    let src = in_place_if_overlapping(src, dst, len);
    ctx.update(false, dst, src, len)?;
    if (ctx.evp.ctx_ctrl)(ctx.ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN as c_int, expected.as_mut_ptr().cast()) != 1 {
        return Err(GcmError::OpenSsl("EVP_CTRL_GCM_SET_TAG"));
    }
    let mut out_len: c_int = 0;
    let mut rest = [0u8; 32];
    if (ctx.evp.decrypt_final)(ctx.ctx, rest.as_mut_ptr(), &mut out_len) != 1 {
        return Err(GcmError::Authentication);
    }
    Ok(())
}

/// OpenSSL works in place or between separate buffers, not between overlapping ones: move the
/// bytes to `dst` first when the two overlap; returns where to read from.
///
/// # Safety
/// As for `seal_raw`.
unsafe fn in_place_if_overlapping(src: *const u8, dst: *mut u8, len: usize) -> *const u8 {
    let (s, d) = (src as usize, dst as usize);
    if s != d && s < d + len && d < s + len {
        std::ptr::copy(src, dst, len);
        return dst;
    }
    src
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" {
        fn dlopen(file: *const c_char, mode: c_int) -> *mut c_void;
    }

    /// Encrypt `data` in place; returns the tag.
    fn seal(key: &[u8], nonce: &[u8], aad: &[u8], data: &mut [u8]) -> Result<[u8; TAG_LEN], GcmError> {
        let mut tag = [0u8; TAG_LEN];
        // SAFETY: one live slice, read and written in place; the tag is a separate array.
        unsafe { seal_raw(key, nonce, aad, data.as_ptr(), data.as_mut_ptr(), data.len(), tag.as_mut_ptr())? };
        Ok(tag)
    }

    /// Decrypt `data` in place and check `tag`.
    fn open(key: &[u8], nonce: &[u8], aad: &[u8], data: &mut [u8], tag: &[u8]) -> Result<(), GcmError> {
        if tag.len() != TAG_LEN {
            return Err(GcmError::BadArguments(format!("the tag has {} bytes, not {TAG_LEN}", tag.len())));
        }
        // SAFETY: as in `seal`.
        unsafe { open_raw(key, nonce, aad, data.as_ptr(), data.as_mut_ptr(), data.len(), tag.as_ptr()) }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// A test binary has no Node.js around it: load the system's libcrypto into the global scope.
    fn openssl() -> bool {
        // RTLD_NOW | RTLD_GLOBAL
        let loaded = ["libcrypto.so.3", "libcrypto.so.1.1"].iter().any(|name| {
            let c = std::ffi::CString::new(*name).unwrap();
            !unsafe { dlopen(c.as_ptr(), 2 | 0x100) }.is_null()
        });
        if !loaded {
            eprintln!("skipped: no libcrypto.so.3 or .1.1 on this machine (Debian: libssl3)");
        }
        loaded && available()
    }

    #[test]
    fn gcm_test_case_16_in_place_and_back() {
        if !openssl() {
            return;
        }
        // The GCM specification's test case 16 (AES-256, 60 bytes of plaintext, 20 bytes of AAD).
        let key = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
        let nonce = hex("cafebabefacedbaddecaf888");
        let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let plain = hex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39");
        let mut data = plain.clone();
        let tag = seal(&key, &nonce, &aad, &mut data).unwrap();
        assert_eq!(data, hex("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"));
        assert_eq!(tag.to_vec(), hex("76fc6ece0f4e1768cddf8853bb2d551b"));
        let mut back = data.clone();
        open(&key, &nonce, &aad, &mut back, &tag).unwrap();
        assert_eq!(back, plain);
        let mut bad = data.clone();
        bad[7] ^= 1;
        assert_eq!(open(&key, &nonce, &aad, &mut bad, &tag), Err(GcmError::Authentication));
        assert_eq!(open(&key, &nonce, b"other", &mut data.clone(), &tag), Err(GcmError::Authentication));
        assert!(matches!(seal(&key[..16], &nonce, &aad, &mut data), Err(GcmError::BadArguments(_))));
    }

    #[test]
    fn overlapping_source_and_destination() {
        if !openssl() {
            return;
        }
        let key = [7u8; KEY_LEN];
        let nonce = [9u8; NONCE_LEN];
        let plain: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut expected = plain.clone();
        let tag = seal(&key, &nonce, b"aad", &mut expected).unwrap();
        // The plaintext at the start of a buffer, its ciphertext 17 bytes further on (a blob's layout).
        let mut buf = vec![0u8; 17 + plain.len() + TAG_LEN];
        buf[..plain.len()].copy_from_slice(&plain);
        let p = buf.as_mut_ptr();
        unsafe { seal_raw(&key, &nonce, b"aad", p, p.add(17), plain.len(), p.add(17 + plain.len())) }.unwrap();
        assert!(buf[17..17 + plain.len()] == expected[..]);
        assert_eq!(buf[17 + plain.len()..], tag);
        // And back, to the start of the same buffer.
        unsafe { open_raw(&key, &nonce, b"aad", p.add(17), p, plain.len(), p.add(17 + plain.len())) }.unwrap();
        assert!(buf[..plain.len()] == plain[..]);
    }
}
