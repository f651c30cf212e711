#!/usr/bin/env bash
# Runs oxccl binaries inside one QEMU guest that has real InfiniBand verbs through soft-RoCE
# (the kernel's rdma_rxe driver on top of an emulated e1000 NIC), for hosts with no RDMA
# hardware and no rdma modules of their own.
#
# Usage: scripts/softroce/guest.sh --bins "path/bin1 path/bin2" --dir DIR
#                                  [--timeout SECS] [--workdir W] [--keep]
#   --bins     binaries copied into the guest's /bin under their own names, together with
#              the shared libraries they load (ldd closure)
#   --dir      directory copied to /extra in the guest; its executable `run` is started
#              there (cwd /extra, PATH with /bin, NODE_IP=10.0.2.15) once rxe0 is up
#   --timeout  limit for the whole guest run, in seconds (default 300)
#   --workdir  where the initramfs and the console log are built (default: a fresh
#              temporary directory, removed at the end unless --keep is given)
#   --keep     keep the temporary work directory
# Environment: SMP (default 2), MEM in MiB (default 1024), KVER (guest kernel version,
# default the newest in /boot with rdma_rxe), ACCEL=kvm|tcg (default: kvm only
# when kvm_intel or kvm_amd is loaded, tcg otherwise).
#
# Exit status 0 only when the guest printed "extra rc=0", i.e. DIR/run succeeded. The guest's
# console output is printed in every case. See README.md in this directory.
set -euo pipefail

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

BINS="" DIR="" TIMEOUT=300 W="" KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --bins) BINS=${2?}; shift 2 ;;
        --dir) DIR=${2?}; shift 2 ;;
        --timeout) TIMEOUT=${2?}; shift 2 ;;
        --workdir) W=${2?}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage ;;
        *) echo "guest.sh: unknown argument '$1'" >&2; usage ;;
    esac
done
[ -n "$DIR" ] || { echo "guest.sh: --dir is required" >&2; usage; }
[ -d "$DIR" ] || { echo "guest.sh: --dir $DIR is not a directory" >&2; exit 2; }
[ -f "$DIR/run" ] && [ -x "$DIR/run" ] || { echo "guest.sh: $DIR/run must exist and be executable" >&2; exit 2; }
for b in $BINS; do
    [ -f "$b" ] && [ -x "$b" ] || { echo "guest.sh: binary $b not found or not executable" >&2; exit 2; }
done
case "$TIMEOUT" in ''|*[!0-9]*) echo "guest.sh: --timeout wants whole seconds" >&2; exit 2 ;; esac

QEMU_PID=""
if [ -z "$W" ]; then
    W=$(mktemp -d "${TMPDIR:-/tmp}/oxccl-softroce.XXXXXX")
    OWN_W=1
else
    mkdir -p "$W"; OWN_W=0
fi
cleanup() {
    [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null || true
    if [ "$OWN_W" = 1 ] && [ "$KEEP" = 0 ]; then rm -rf "$W"; fi
}
trap cleanup EXIT
ROOT=$W/initramfs
LOG=$W/console.log

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo -n "$@"
    else echo "guest.sh: need root (or sudo) to install packages" >&2; return 1; fi
}

# --- packages: install only those that are missing ----------------------------------------
need=()
for p in qemu-system-x86 linux-image-amd64 busybox-static cpio kmod \
         ibverbs-utils ibverbs-providers libibverbs1 rdma-core iproute2; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} (apt-get)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# --- guest kernel: the newest installed one that builds rdma_rxe as a module ---------------
if [ -z "${KVER:-}" ]; then
    for v in $(ls /boot/vmlinuz-* 2>/dev/null | sed 's|.*/vmlinuz-||' | sort -rV); do
        if grep -q '^CONFIG_RDMA_RXE=m' "/boot/config-$v" 2>/dev/null && [ -d "/lib/modules/$v" ]; then
            KVER=$v; break
        fi
    done
fi
[ -n "${KVER:-}" ] || { echo "guest.sh: no kernel in /boot with an rdma_rxe module" >&2; exit 1; }
[ -r "/boot/vmlinuz-$KVER" ] || { echo "guest.sh: cannot read /boot/vmlinuz-$KVER" >&2; exit 1; }

# --- initramfs tree --------------------------------------------------------------------------
rm -rf "$ROOT"
mkdir -p "$ROOT"/{bin,sbin,etc/libibverbs.d,proc,sys,dev,tmp,mods,lib64,usr/bin,usr/lib,extra}
ln -s usr/lib "$ROOT/lib"        # same merged-/usr layout as Debian, so library paths match
cp /bin/busybox "$ROOT/bin/busybox"
for a in $("$ROOT/bin/busybox" --list); do
    [ "$a" = busybox ] || ln -sf busybox "$ROOT/bin/$a"
done

# Kernel modules with their dependencies, in load order (there is no modprobe in the guest).
# rxe computes its ICRC through the crypto API's "crc32" hash and cannot ask for a module to be
# loaded on demand here, so the crc32 implementations go in before rdma_rxe.
: > "$ROOT/mods/order"
add_mod() {
    local deps ko b
    deps=$(modprobe -S "$KVER" --show-depends "$1") \
        || { echo "guest.sh: module $1 not found for kernel $KVER" >&2; exit 1; }
    for ko in $(awk '$1=="insmod"{print $2}' <<<"$deps"); do
        b=$(basename "$ko")
        grep -qxF "$b" "$ROOT/mods/order" && continue
        cp "$ko" "$ROOT/mods/$b"
        echo "$b" >> "$ROOT/mods/order"
    done
}
for m in crc32_generic crc32_pclmul e1000 ib_core ib_uverbs rdma_rxe; do add_mod "$m"; done

# Shared libraries of a binary (ldd closure), copied to the same absolute path in the guest.
copy_libs() {
    local out l
    out=$(ldd "$1" 2>&1) || return 0     # a static binary needs nothing
    if grep -q 'not found' <<<"$out"; then
        echo "guest.sh: $1 needs a library this host lacks:" >&2
        grep 'not found' <<<"$out" >&2; exit 1
    fi
    for l in $(awk '$2=="=>" && $3 ~ /^\//{print $3; next} $1 ~ /^\//{print $1}' <<<"$out"); do
        [ -f "$ROOT$l" ] && continue
        mkdir -p "$ROOT$(dirname "$l")"
        cp -L "$l" "$ROOT$l"
    done
}
copy_tool() {   # a host file kept at its own path
    mkdir -p "$ROOT$(dirname "$1")"
    cp -L "$1" "$ROOT$1"
    copy_libs "$1"
}
LIBD=/usr/lib/x86_64-linux-gnu
for f in /usr/bin/rdma /usr/bin/ibv_devices /usr/bin/ibv_devinfo /usr/bin/ibv_rc_pingpong \
         /usr/bin/ibv_ud_pingpong $LIBD/libibverbs/librxe-rdmav*.so; do
    copy_tool "$f"
done
cp /etc/libibverbs.d/rxe.driver "$ROOT/etc/libibverbs.d/"
for b in $BINS; do
    name=$(basename "$b")
    rm -f "$ROOT/bin/$name"       # may be a busybox link; never write through it
    cp -L "$b" "$ROOT/bin/$name"
    chmod 755 "$ROOT/bin/$name"
    copy_libs "$b"
done
cp -a "$DIR"/. "$ROOT/extra/"

cat > "$ROOT/init" <<'EOF'
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
up() { cut -d' ' -f1 /proc/uptime; }
echo "=== guest up at $(up)s"
for m in $(cat /mods/order); do insmod /mods/$m || echo "insmod $m FAILED"; done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
rdma link add rxe0 type rxe netdev eth0 || echo "rdma link add FAILED"
# Wait (at most 5 s) for GID 1, the IPv4-mapped address RoCE v2 uses here, and for the port
# to follow eth0's carrier to ACTIVE.
t0=$(up)
P=/sys/class/infiniband/rxe0/ports/1
i=0; gid_ms=""; act_ms=""
while [ $i -lt 50 ]; do
    g=$(cat $P/gids/1 2>/dev/null)
    if [ -z "$gid_ms" ]; then
        case "$g" in ''|0000:0000:0000:0000:0000:0000:0000:0000) ;; *) gid_ms=$((i*100)) ;; esac
    fi
    [ -z "$act_ms" ] && grep -q ACTIVE $P/state 2>/dev/null && act_ms=$((i*100))
    [ -n "$gid_ms" ] && [ -n "$act_ms" ] && break
    usleep 100000; i=$((i+1))
done
echo "=== rxe0 added at ${t0}s: gid[1]=$g after ${gid_ms:->5000} ms, port ACTIVE after ${act_ms:->5000} ms"
ibv_devinfo -d rxe0 | grep -E 'hca_id|transport|fw_ver|state|active_mtu|link_layer'
echo "=== /extra/run at $(up)s"
cd /extra
NODE_IP=10.0.2.15 /extra/run
echo "extra rc=$?"
echo "=== done at $(up)s"
poweroff -f
EOF
chmod 755 "$ROOT/init"
(cd "$ROOT" && find . | cpio -o -H newc --quiet | gzip -1) > "$W/initramfs.cpio.gz"
echo "guest kernel $KVER, initramfs $(du -h "$W/initramfs.cpio.gz" | cut -f1)"

# --- boot ------------------------------------------------------------------------------------
# Hardware KVM only when kvm_intel or kvm_amd is loaded. Some hosts expose a /dev/kvm that is
# a software "pagetable-based" KVM (kvm_pvm) which runs only kernels built for it; a stock
# Debian kernel hangs there early in boot. Everything else gets TCG: slow but correct.
if [ -z "${ACCEL:-}" ]; then
    if [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then
        ACCEL=kvm
    else
        ACCEL=tcg
    fi
fi
if [ "$ACCEL" = kvm ]; then ACC=(-enable-kvm -cpu host); else ACC=(-accel "tcg,thread=multi" -cpu max); fi
echo "booting ($ACCEL, smp ${SMP:-2}, ${MEM:-1024} MiB, timeout ${TIMEOUT}s)"
rm -f "$LOG"
start=$(date +%s)
qrc=0
timeout "$TIMEOUT" qemu-system-x86_64 "${ACC[@]}" -m "${MEM:-1024}" -smp "${SMP:-2}" \
    -kernel "/boot/vmlinuz-$KVER" -initrd "$W/initramfs.cpio.gz" \
    -append "console=ttyS0 panic=-1 rdinit=/init loglevel=4" \
    -netdev user,id=n0 -device e1000,netdev=n0 \
    -display none -monitor none -serial file:"$LOG" -no-reboot </dev/null &
QEMU_PID=$!
wait "$QEMU_PID" || qrc=$?
QEMU_PID=""
echo "qemu exited with $qrc after $(( $(date +%s) - start ))s"
echo "--- guest console"
[ -f "$LOG" ] && tr -d '\r' < "$LOG" | grep -av '^$' || true
echo "---"

clean=$( [ -f "$LOG" ] && tr -d '\r' < "$LOG" || true )
if grep -aq 'extra rc=0$' <<<"$clean"; then
    echo "guest run passed"
    exit 0
fi
rc=$(grep -ao 'extra rc=[0-9]*$' <<<"$clean" | tail -n 1 | cut -d= -f2 || true)
if [ -n "$rc" ]; then
    echo "guest run failed: /extra/run exited with $rc"
elif [ "$qrc" = 124 ]; then
    echo "guest run failed: the guest did not finish within ${TIMEOUT}s"
else
    echo "guest run failed: the guest did not finish (qemu exit status $qrc)"
fi
exit 1
