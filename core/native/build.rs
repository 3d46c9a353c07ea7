//! Compiles the official BLAKE3 C implementation (blake3/) into this library with the system's C
//! compiler — the one Rust links with on Unix — since crates (and so the `cc` crate) are not
//! available: standard library only. On x86-64 the hand-tuned assembly (SSE2 to AVX-512) goes
//! in and BLAKE3 picks the best the CPU has at run time; on AArch64 NEON; elsewhere the portable
//! code.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let src = Path::new("blake3");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let cc = env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let mut sources = vec!["blake3.c", "blake3_dispatch.c", "blake3_portable.c", "stillpoint_blake3.c"];
    let mut defines: Vec<&str> = Vec::new();
    match arch.as_str() {
        "x86_64" => sources.extend([
            "blake3_sse2_x86-64_unix.S",
            "blake3_sse41_x86-64_unix.S",
            "blake3_avx2_x86-64_unix.S",
            "blake3_avx512_x86-64_unix.S",
        ]),
        "aarch64" => {
            sources.push("blake3_neon.c");
            defines.push("-DBLAKE3_USE_NEON=1");
        }
        _ => defines.extend(["-DBLAKE3_NO_SSE2", "-DBLAKE3_NO_SSE41", "-DBLAKE3_NO_AVX2", "-DBLAKE3_NO_AVX512"]),
    }
    let mut objects = Vec::new();
    for file in &sources {
        let object = out.join(format!("{file}.o"));
        let status = Command::new(&cc)
            .args(["-c", "-O3", "-fPIC", "-std=c11"])
            .args(&defines)
            .arg(src.join(file))
            .arg("-o")
            .arg(&object)
            .status()
            .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}` for blake3/{file}: {e}"));
        assert!(status.success(), "the C compiler failed on blake3/{file}");
        objects.push(object);
        println!("cargo:rerun-if-changed=blake3/{file}");
    }
    let lib = out.join("libstillpoint_blake3.a");
    let _ = std::fs::remove_file(&lib);
    let status = Command::new(env::var("AR").unwrap_or_else(|_| "ar".to_string()))
        .arg("crs")
        .arg(&lib)
        .args(&objects)
        .status()
        .expect("cannot run ar");
    assert!(status.success(), "ar failed");
    println!("cargo:rerun-if-changed=blake3/blake3.h");
    println!("cargo:rerun-if-changed=blake3/blake3_impl.h");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static=stillpoint_blake3");
}
