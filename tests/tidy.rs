//! Invariants of the source tree, checked under `cargo test` (STYLE.md 13).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if !p.ends_with("target")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Directories allowed to contain `unsafe` code.
const UNSAFE_ALLOWED: &[&str] = &["transports/", "bindings/"];

#[test]
fn unsafe_only_in_transports_and_bindings_each_with_a_safety_comment() {
    let root = workspace();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut bad = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(f).unwrap();
        let allowed = UNSAFE_ALLOWED.iter().any(|a| rel.starts_with(a));
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let uses_unsafe = code.contains("unsafe {")
                || code.contains("unsafe fn")
                || code.contains("unsafe impl");
            if !uses_unsafe || rel == "tests/tidy.rs" {
                continue;
            }
            if !allowed {
                bad.push(format!(
                    "{rel}:{}: unsafe outside transports/ and bindings/",
                    i + 1
                ));
            } else if code.contains("unsafe {") || code.contains("unsafe impl") {
                let window = &lines[i.saturating_sub(12)..=i];
                if !window.iter().any(|l| l.contains("SAFETY:")) {
                    bad.push(format!(
                        "{rel}:{}: unsafe block without a SAFETY: comment",
                        i + 1
                    ));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn crates_without_ffi_forbid_unsafe() {
    for lib in ["src/lib.rs", "algorithms/src/lib.rs", "tools/src/lib.rs"] {
        let text = std::fs::read_to_string(workspace().join(lib)).unwrap();
        assert!(
            text.contains("#![forbid(unsafe_code)]"),
            "{lib} must forbid unsafe code"
        );
    }
    for ffi in ["transports/src/lib.rs", "bindings/c/src/lib.rs"] {
        let t = std::fs::read_to_string(workspace().join(ffi)).unwrap();
        assert!(
            t.contains("#![deny(clippy::undocumented_unsafe_blocks)]"),
            "{ffi} must deny undocumented unsafe blocks"
        );
    }
}

#[test]
fn source_files_stay_readable_in_one_sitting() {
    const MAX_LINES: usize = 700;
    let root = workspace();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).ok()?.lines().count();
            (n > MAX_LINES)
                .then(|| format!("{}: {n} lines", f.strip_prefix(&root).unwrap().display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines (split them):\n{}",
        long.join("\n")
    );
}
