//! The header-drift check: `include/emcoder.h` must be exactly what cbindgen generates from this
//! crate with `cbindgen.toml`. `EMCODER_BLESS_HEADER=1` rewrites it instead (`make header`).

use std::path::Path;

#[test]
fn header_matches_the_code() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("ffi/cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen cannot generate the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let path = dir.join("../include/emcoder.h");
    if std::env::var_os("EMCODER_BLESS_HEADER").is_some_and(|v| v != "0") {
        std::fs::write(&path, &generated).expect("cannot write include/emcoder.h");
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    if committed != generated {
        let first = committed
            .split(|&b| b == b'\n')
            .zip(generated.split(|&b| b == b'\n'))
            .position(|(a, b)| a != b)
            .map_or("its end".to_string(), |i| format!("line {}", i + 1));
        panic!(
            "include/emcoder.h is out of date with ffi/src (first difference at {first}).\n\
             Regenerate it with `make header` (EMCODER_BLESS_HEADER=1 cargo test -p emcoder-ffi \
             header_drift) and commit it."
        );
    }
}
