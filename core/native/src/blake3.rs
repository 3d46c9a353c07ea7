//! BLAKE3 through the official C implementation (blake3/, compiled in by build.rs): names chunks
//! (Stillpoint's `chunkHash` "blake3" and "blake3-keyed").

/// Key length of keyed mode, and length of a hash.
pub const KEY_LEN: usize = 32;
pub const OUT_LEN: usize = 32;

extern "C" {
    fn stillpoint_blake3(key: *const u8, data: *const u8, len: usize, out: *mut u8);
}

/// BLAKE3 of `data`, keyed with `key` (keyed mode) or plain.
pub fn hash(key: Option<&[u8; KEY_LEN]>, data: &[u8]) -> [u8; OUT_LEN] {
    let mut out = [0u8; OUT_LEN];
    // SAFETY: the key is 32 bytes or null, `data` is `len` readable bytes, `out` has 32 bytes.
    unsafe { stillpoint_blake3(key.map_or(std::ptr::null(), |k| k.as_ptr()), data.as_ptr(), data.len(), out.as_mut_ptr()) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// The official test vectors (test_vectors.json): input byte i is i % 251.
    #[test]
    fn official_vectors() {
        let key: &[u8; 32] = b"whats the Elvish word for friend";
        let input = |n: usize| (0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
        assert_eq!(hex(&hash(None, &input(0))), "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
        assert_eq!(hex(&hash(Some(key), &input(0))), "92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26");
        assert_eq!(hex(&hash(None, &input(1))), "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213");
        assert_eq!(hex(&hash(None, &input(1024))), "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7");
    }
}
