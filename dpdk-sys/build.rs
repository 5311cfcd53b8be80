//! Generates the DPDK bindings with bindgen and compiles the C shim.
//!
//! The flags come from running `pkg-config` ourselves rather than from the
//! `pkg-config` crate: that crate drops `-include rte_config.h` and
//! `-march=...`, without which DPDK's headers neither parse nor match the
//! ABI the libraries were built for.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn pkg_config(args: &[&str]) -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("libdpdk")
        .output()
        .unwrap_or_else(|e| panic!("cannot run pkg-config ({e}); install pkg-config and libdpdk-dev"));
    if !out.status.success() {
        panic!(
            "pkg-config {} libdpdk failed: {}\nInstall libdpdk-dev (testbed/install-deps.sh does).",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).expect("pkg-config printed non-UTF-8").split_whitespace().map(str::to_owned).collect()
}

fn main() {
    println!("cargo:rerun-if-changed=shim.c");
    println!("cargo:rerun-if-changed=shim.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let cflags = pkg_config(&["--cflags"]);
    let libs = pkg_config(&["--libs"]);
    let version = pkg_config(&["--modversion"]).join("");
    println!("cargo:rustc-env=DPDK_PKG_VERSION={version}");
    // Visible to dependants' build scripts as DEP_RTE_EAL_VERSION.
    println!("cargo:version={version}");

    let mut build = cc::Build::new();
    build.file("shim.c").opt_level(3).warnings(true);
    for flag in &cflags {
        build.flag(flag);
    }
    build.compile("lbd_dpdk_shim");

    for lib in &libs {
        if let Some(name) = lib.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={name}");
        } else if let Some(dir) = lib.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        }
        // `-Wl,--as-needed` is rustc's default already.
    }

    let bindings = bindgen::Builder::default()
        .header("shim.h")
        .clang_args(&cflags)
        .allowlist_function("rte_.*")
        .allowlist_function("lbd_shim_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*")
        .allowlist_var("SOCKET_ID_ANY")
        // These two contain bitfields in packed unions that bindgen in DPDK
        // 22.11 lays out wrongly; nothing here touches them.
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .derive_default(true)
        .derive_debug(false)
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen failed on the DPDK headers");

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    bindings.write_to_file(out.join("bindings.rs")).expect("cannot write bindings.rs");
}
