//! Generates the DPDK bindings against the system's `libdpdk` and compiles the
//! C shim plus bindgen's wrappers for DPDK's `static inline` functions.
//!
//! The raw `pkg-config --cflags` output is passed through untouched: it carries
//! `-include rte_config.h` and `-march=...`, which a parsed include list loses
//! and without which the headers do not compile.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn pkg_config(arg: &str) -> Vec<String> {
    let out = Command::new("pkg-config")
        .args([arg, "libdpdk"])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run pkg-config ({e}); install pkg-config and libdpdk-dev")
        });
    if !out.status.success() {
        panic!(
            "pkg-config {arg} libdpdk failed: {}\ninstall DPDK's headers: apt-get install libdpdk-dev",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout)
        .expect("pkg-config prints UTF-8")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let cflags = pkg_config("--cflags");
    let header = manifest.join("wrapper.h");

    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=shim.h");
    println!("cargo:rerun-if-changed=shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let wrappers = out.join("static_fns");
    // `rte_.*` also selects the `static inline` functions (burst I/O, mbuf
    // allocation, rings, TSC); `wrap_static_fns` turns each into a real symbol.
    let builder = bindgen::Builder::default()
        .header(header.to_str().unwrap())
        .clang_args(&cflags)
        .clang_arg("-DALLOW_EXPERIMENTAL_API")
        .clang_arg(format!("-I{}", manifest.display()))
        .allowlist_function("rte_.*")
        .allowlist_function("lb_rte_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*")
        // Packed structs that bindgen cannot lay out with their alignment;
        // lb-core parses these headers from bytes anyway.
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_arp_ipv4")
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .derive_default(true)
        .derive_debug(true)
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false)
        // Constants built with RTE_BIT64 only appear through clang's evaluation.
        .clang_macro_fallback()
        .wrap_static_fns(true)
        .wrap_static_fns_path(&wrappers)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    let bindings = builder
        .generate()
        .expect("bindgen could not bind DPDK's headers");
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs");

    let mut cc = cc::Build::new();
    cc.file(manifest.join("shim.c"))
        .file(wrappers.with_extension("c"))
        .include(&manifest)
        .define("ALLOW_EXPERIMENTAL_API", None)
        .opt_level(2)
        .warnings(false);
    for flag in &cflags {
        cc.flag(flag);
    }
    cc.compile("lb_dpdk_shim");

    for flag in pkg_config("--libs") {
        if let Some(lib) = flag.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={lib}");
        } else if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        }
    }
}
