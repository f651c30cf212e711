//! Gives `libnccl.so` NCCL's soname, so programs linked against it load `libnccl.so.2`.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnccl.so.2");
    println!("cargo:rerun-if-changed=build.rs");
}
