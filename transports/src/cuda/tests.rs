//! NVRTC compilation of every kernel. Runs where libnvrtc loads (CI installs the
//! `nvidia-cuda-nvrtc-cu12` wheel and sets `OXCCL_REQUIRE_NVRTC=1`, which turns a missing
//! NVRTC into a failure instead of a skip).

use super::*;

fn nvrtc_or_skip() -> bool {
    match nvrtc_available() {
        Ok(()) => true,
        Err(e) if std::env::var("OXCCL_REQUIRE_NVRTC").as_deref() == Ok("1") => {
            panic!("OXCCL_REQUIRE_NVRTC=1 but {e}")
        }
        Err(e) => {
            eprintln!("skipped: {e}");
            false
        }
    }
}

#[test]
fn every_kernel_compiles_to_ptx_with_16_byte_loads_and_is_cached() {
    if !nvrtc_or_skip() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("oxccl-kernel-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for arch in ["sm_80", "sm_90"] {
        let k = compile_kernels(arch, Some(&dir)).unwrap();
        assert!(!k.from_cache);
        for name in kernels::kernel_names() {
            assert!(
                k.ptx.contains(&format!(".entry {name}(")),
                "{arch}: no entry {name} in the PTX"
            );
        }
        // The vectorised bulk: 128-bit global loads and stores.
        assert!(
            k.ptx.contains("ld.global.v4") || k.ptx.contains("ld.global.nc.v4"),
            "{arch}: no 16-byte loads"
        );
        assert!(k.ptx.contains("st.global.v4"), "{arch}: no 16-byte stores");
        // f16 goes through the hardware conversions.
        assert!(k.ptx.contains("cvt.f32.f16") && k.ptx.contains("cvt.rn.f16.f32"));
        assert!(
            k.ptx.contains(&format!(".target {arch}")),
            "{arch}: wrong target"
        );
        let again = compile_kernels(arch, Some(&dir)).unwrap();
        assert!(
            again.from_cache,
            "{arch}: second compilation did not hit the cache"
        );
        assert_eq!(again.ptx, k.ptx);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_architectures_are_named() {
    for arch in ["90", "sm_", "compute_x"] {
        let e = compile_kernels(arch, None).unwrap_err().to_string();
        assert!(e.contains(arch) && e.contains("sm_90"), "{e}");
    }
}
