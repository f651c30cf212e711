# shellcheck shell=bash
# What guest.sh and two-guests.sh have in common: their options, the packages they need, the
# choice of guest kernel, the initramfs (busybox, kernel modules, verbs tools, the --bins with
# their libraries, the --dir), KVM or TCG, and reading the guests' console logs.
#
# Sourced by both, after `set -euo pipefail`, with the script's own name as the argument to
# "." (every error message starts with it); not meant to be run on its own. The script defines
# usage() itself.
# What stays in each script: the guest's /init, how QEMU is started, and the final report.

ME=$1       # the sourcing script's name
PIDS=()     # QEMU (timeout) processes still running; killed on exit

# parse_args ARGS...: sets BINS, DIR, TIMEOUT, W and KEEP from the command line and checks
# them. --help, an unknown option or no --dir print the usage, a bad value a message; all of
# these exit with status 2 (an option without its value stops bash itself, with status 1).
parse_args() {
    local b
    BINS="" DIR="" TIMEOUT=300 W="" KEEP=0
    while [ $# -gt 0 ]; do
        case "$1" in
            --bins) BINS=${2?}; shift 2 ;;
            --dir) DIR=${2?}; shift 2 ;;
            --timeout) TIMEOUT=${2?}; shift 2 ;;
            --workdir) W=${2?}; shift 2 ;;
            --keep) KEEP=1; shift ;;
            -h|--help) usage ;;
            *) echo "$ME: unknown argument '$1'" >&2; usage ;;
        esac
    done
    [ -n "$DIR" ] || { echo "$ME: --dir is required" >&2; usage; }
    [ -d "$DIR" ] || { echo "$ME: --dir $DIR is not a directory" >&2; exit 2; }
    [ -f "$DIR/run" ] && [ -x "$DIR/run" ] || { echo "$ME: $DIR/run must exist and be executable" >&2; exit 2; }
    for b in $BINS; do
        [ -f "$b" ] && [ -x "$b" ] || { echo "$ME: binary $b not found or not executable" >&2; exit 2; }
    done
    case "$TIMEOUT" in ''|*[!0-9]*) echo "$ME: --timeout wants whole seconds" >&2; exit 2 ;; esac
}

# make_workdir NAME: the work directory W (a fresh ${TMPDIR:-/tmp}/NAME.XXXXXX unless --workdir
# named one) and ROOT, the initramfs tree inside it. From here on, exiting stops the guests in
# PIDS and removes a fresh W unless --keep was given.
make_workdir() {
    if [ -z "$W" ]; then
        W=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
        OWN_W=1
    else
        mkdir -p "$W"; OWN_W=0
    fi
    trap cleanup EXIT
    ROOT=$W/initramfs
}
cleanup() {
    local p
    for p in "${PIDS[@]}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    if [ "$OWN_W" = 1 ] && [ "$KEEP" = 0 ]; then rm -rf "$W"; fi
}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo -n "$@"
    else echo "$ME: need root (or sudo) to install packages" >&2; return 1; fi
}

# install_packages: apt-get installs those of the host packages the guests need that are missing.
install_packages() {
    local p need=()
    for p in qemu-system-x86 linux-image-amd64 busybox-static cpio kmod \
             ibverbs-utils ibverbs-providers libibverbs1 rdma-core iproute2; do
        dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
    done
    if [ ${#need[@]} -gt 0 ]; then
        echo "installing ${need[*]} (apt-get)"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
    fi
}

# choose_kernel: KVER, unless already set, becomes the newest kernel in /boot whose rdma_rxe is
# a module (with its modules directory present); exits 1 when there is none or it is unreadable.
choose_kernel() {
    local v
    if [ -z "${KVER:-}" ]; then
        for v in $(ls /boot/vmlinuz-* 2>/dev/null | sed 's|.*/vmlinuz-||' | sort -rV); do
            if grep -q '^CONFIG_RDMA_RXE=m' "/boot/config-$v" 2>/dev/null && [ -d "/lib/modules/$v" ]; then
                KVER=$v; break
            fi
        done
    fi
    [ -n "${KVER:-}" ] || { echo "$ME: no kernel in /boot with an rdma_rxe module" >&2; exit 1; }
    [ -r "/boot/vmlinuz-$KVER" ] || { echo "$ME: cannot read /boot/vmlinuz-$KVER" >&2; exit 1; }
}

# build_tree: the initramfs tree in ROOT, everything but /init: busybox and its applets, the
# kernel modules, the verbs tools and rxe provider, the --bins and the --dir (as /extra).
build_tree() {
    local a m f b name
    rm -rf "$ROOT"
    mkdir -p "$ROOT"/{bin,sbin,etc/libibverbs.d,proc,sys,dev,tmp,mods,lib64,usr/bin,usr/lib,extra}
    ln -s usr/lib "$ROOT/lib"        # Debian's merged /usr, so library paths are the host's
    cp /bin/busybox "$ROOT/bin/busybox"
    for a in $("$ROOT/bin/busybox" --list); do
        [ "$a" = busybox ] || ln -sf busybox "$ROOT/bin/$a"
    done

    # The guest has no modprobe: /mods/order lists the modules in the order /init loads them.
    # rdma_rxe gets the crypto API's "crc32" hash for its ICRC and nothing in the guest could
    # load an implementation on demand, so crc32_generic and crc32_pclmul come first.
    : > "$ROOT/mods/order"
    for m in crc32_generic crc32_pclmul e1000 ib_core ib_uverbs rdma_rxe; do add_mod "$m"; done

    for f in /usr/bin/rdma /usr/bin/ibv_devices /usr/bin/ibv_devinfo /usr/bin/ibv_rc_pingpong \
             /usr/bin/ibv_ud_pingpong /usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav*.so; do
        copy_tool "$f"
    done
    cp /etc/libibverbs.d/rxe.driver "$ROOT/etc/libibverbs.d/"
    for b in $BINS; do
        name=$(basename "$b")
        rm -f "$ROOT/bin/$name"       # it may be a link to busybox, which must stay as it is
        cp -L "$b" "$ROOT/bin/$name"
        chmod 755 "$ROOT/bin/$name"
        copy_libs "$b"
    done
    cp -a "$DIR"/. "$ROOT/extra/"
}

# add_mod MODULE: MODULE for KVER and the modules it depends on, each once, into ROOT/mods.
add_mod() {
    local deps ko b
    deps=$(modprobe -S "$KVER" --show-depends "$1") \
        || { echo "$ME: module $1 not found for kernel $KVER" >&2; exit 1; }
    for ko in $(awk '$1=="insmod"{print $2}' <<<"$deps"); do
        b=$(basename "$ko")
        grep -qxF "$b" "$ROOT/mods/order" && continue
        cp "$ko" "$ROOT/mods/$b"
        echo "$b" >> "$ROOT/mods/order"
    done
}

# copy_libs FILE: the shared libraries FILE loads (as ldd lists them), each at its host path
# under ROOT; exits 1 when the host lacks one.
copy_libs() {
    local out l
    out=$(ldd "$1" 2>&1) || return 0     # static: nothing to copy
    if grep -q 'not found' <<<"$out"; then
        echo "$ME: $1 needs a library this host lacks:" >&2
        grep 'not found' <<<"$out" >&2; exit 1
    fi
    for l in $(awk '$2=="=>" && $3 ~ /^\//{print $3; next} $1 ~ /^\//{print $1}' <<<"$out"); do
        [ -f "$ROOT$l" ] && continue
        mkdir -p "$ROOT$(dirname "$l")"
        cp -L "$l" "$ROOT$l"
    done
}

# copy_tool FILE: a host file at the same path under ROOT, with its libraries.
copy_tool() {
    mkdir -p "$ROOT$(dirname "$1")"
    cp -L "$1" "$ROOT$1"
    copy_libs "$1"
}

# pack_initramfs: ROOT (with the /init the script wrote) as W/initramfs.cpio.gz.
pack_initramfs() {
    chmod 755 "$ROOT/init"
    (cd "$ROOT" && find . | cpio -o -H newc --quiet | gzip -1) > "$W/initramfs.cpio.gz"
    echo "guest kernel $KVER, initramfs $(du -h "$W/initramfs.cpio.gz" | cut -f1)"
}

# choose_accel: ACCEL (kvm or tcg, unless already set) and ACC, QEMU's options for it.
# kvm only when the kvm_intel or kvm_amd module is loaded: a /dev/kvm can also come from
# kvm_pvm, a software KVM that runs only kernels built for it (Debian's hangs early in boot).
# Everywhere else TCG, QEMU's CPU emulation: slow, but correct.
choose_accel() {
    if [ -z "${ACCEL:-}" ]; then
        if [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then
            ACCEL=kvm
        else
            ACCEL=tcg
        fi
    fi
    # shellcheck disable=SC2034  # ACC is used by the script's QEMU command line
    if [ "$ACCEL" = kvm ]; then ACC=(-enable-kvm -cpu host); else ACC=(-accel "tcg,thread=multi" -cpu max); fi
}

# Console logs. console LOG: its text without carriage returns (nothing when LOG is missing);
# show_console LOG: the same without empty lines, for the user; console_passed LOG: true when
# the guest printed "extra rc=0"; console_rc LOG: the status of the last "extra rc=N" line, or
# nothing when there is none.
console() { [ -f "$1" ] && tr -d '\r' < "$1" || true; }
show_console() { console "$1" | grep -av '^$' || true; }
console_passed() { grep -aq 'extra rc=0$' <<<"$(console "$1")"; }
console_rc() { grep -ao 'extra rc=[0-9]*$' <<<"$(console "$1")" | tail -n 1 | cut -d= -f2 || true; }
