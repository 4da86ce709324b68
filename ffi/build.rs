//! Gives libemcoder.so its SONAME, `libemcoder.so.0`: programs linked against it record that
//! name, so an installed `libemcoder.so.0 -> libemcoder.so.0.<minor>.<patch>` (`make install`)
//! serves them across compatible versions (see EMCODER_ABI_VERSION). The `0` changes only with
//! an incompatible change of the C ABI.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" || os == "android" || os.ends_with("bsd") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libemcoder.so.0");
    }
}
