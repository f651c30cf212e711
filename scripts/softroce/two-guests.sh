#!/usr/bin/env bash
# Runs oxccl binaries in two QEMU guests with soft-RoCE verbs (rdma_rxe on an emulated e1000),
# whose NICs are joined by a QEMU socket network, so RDMA traffic really crosses a (virtual)
# wire as RoCE v2 (UDP 4791) instead of staying inside one kernel.
#
# Usage: scripts/softroce/two-guests.sh --bins "path/bin1 path/bin2" --dir DIR
#                                       [--timeout SECS] [--workdir W] [--keep]
#   --bins     binaries copied into each guest's /bin under their own names, together with
#              the shared libraries they load (ldd closure)
#   --dir      directory copied to /extra in both guests; its executable `run` is started
#              there (cwd /extra, PATH with /bin) once the guests can ping each other, with
#              NODE=0|1, NODE_IP (this guest) and PEER_IP (the other guest) exported
#   --timeout  limit for each guest's run, in seconds (default 300)
#   --workdir  where the initramfs and the console logs are built (default: a fresh
#              temporary directory, removed at the end unless --keep is given)
#   --keep     keep the temporary work directory
# Guests: node 0 is 10.0.3.1 (its QEMU listens on 127.0.0.1:PORT), node 1 is 10.0.3.2 (its
# QEMU connects there). Environment: PORT (default: a free one from 12345 + pid % 1000 up),
# SMP (default 1 per guest), MEM in MiB (default 768 per guest), KVER (guest kernel version,
# default the newest in /boot with rdma_rxe), ACCEL=kvm|tcg (default: kvm only when kvm_intel
# or kvm_amd is loaded, tcg otherwise).
#
# Exit status 0 only when both guests printed "extra rc=0". Both consoles are printed in every
# case. See README.md in this directory.
set -euo pipefail

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

BINS="" DIR="" TIMEOUT=300 W="" KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --bins) BINS=${2?}; shift 2 ;;
        --dir) DIR=${2?}; shift 2 ;;
        --timeout) TIMEOUT=${2?}; shift 2 ;;
        --workdir) W=${2?}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage ;;
        *) echo "two-guests.sh: unknown argument '$1'" >&2; usage ;;
    esac
done
[ -n "$DIR" ] || { echo "two-guests.sh: --dir is required" >&2; usage; }
[ -d "$DIR" ] || { echo "two-guests.sh: --dir $DIR is not a directory" >&2; exit 2; }
[ -f "$DIR/run" ] && [ -x "$DIR/run" ] || { echo "two-guests.sh: $DIR/run must exist and be executable" >&2; exit 2; }
for b in $BINS; do
    [ -f "$b" ] && [ -x "$b" ] || { echo "two-guests.sh: binary $b not found or not executable" >&2; exit 2; }
done
case "$TIMEOUT" in ''|*[!0-9]*) echo "two-guests.sh: --timeout wants whole seconds" >&2; exit 2 ;; esac

PIDS=("" "")
if [ -z "$W" ]; then
    W=$(mktemp -d "${TMPDIR:-/tmp}/oxccl-softroce2.XXXXXX")
    OWN_W=1
else
    mkdir -p "$W"; OWN_W=0
fi
cleanup() {
    local p
    for p in "${PIDS[@]}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    if [ "$OWN_W" = 1 ] && [ "$KEEP" = 0 ]; then rm -rf "$W"; fi
}
trap cleanup EXIT
ROOT=$W/initramfs

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo -n "$@"
    else echo "two-guests.sh: need root (or sudo) to install packages" >&2; return 1; fi
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
[ -n "${KVER:-}" ] || { echo "two-guests.sh: no kernel in /boot with an rdma_rxe module" >&2; exit 1; }
[ -r "/boot/vmlinuz-$KVER" ] || { echo "two-guests.sh: cannot read /boot/vmlinuz-$KVER" >&2; exit 1; }

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
        || { echo "two-guests.sh: module $1 not found for kernel $KVER" >&2; exit 1; }
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
        echo "two-guests.sh: $1 needs a library this host lacks:" >&2
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

# One initramfs for both guests: each reads its node number and addresses from the kernel
# command line (oxccl_node=, oxccl_ip=, oxccl_peer=).
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
for kv in $(cat /proc/cmdline); do
    case "$kv" in
        oxccl_node=*) NODE=${kv#*=} ;;
        oxccl_ip=*) NODE_IP=${kv#*=} ;;
        oxccl_peer=*) PEER_IP=${kv#*=} ;;
    esac
done
echo "=== node $NODE ($NODE_IP) up at $(up)s"
for m in $(cat /mods/order); do insmod /mods/$m || echo "insmod $m FAILED"; done
ip link set lo up
ip link set eth0 up
ip addr add $NODE_IP/24 dev eth0
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
# The other guest boots at its own pace: wait (at most 30 s) until it answers pings.
end=$(( $(cut -d. -f1 /proc/uptime) + 30 ))
reached=0
while [ $(cut -d. -f1 /proc/uptime) -lt $end ]; do
    if ping -c1 -W1 $PEER_IP >/dev/null 2>&1; then reached=1; break; fi
    usleep 200000
done
if [ $reached = 1 ]; then
    echo "=== peer $PEER_IP reachable; /extra/run at $(up)s"
    export NODE NODE_IP PEER_IP
    cd /extra
    /extra/run
    echo "extra rc=$?"
else
    echo "=== peer unreachable: no answer from $PEER_IP within 30 s"
fi
echo "=== done at $(up)s"
poweroff -f
EOF
chmod 755 "$ROOT/init"
(cd "$ROOT" && find . | cpio -o -H newc --quiet | gzip -1) > "$W/initramfs.cpio.gz"
echo "guest kernel $KVER, initramfs $(du -h "$W/initramfs.cpio.gz" | cut -f1)"

# --- boot ------------------------------------------------------------------------------------
# Hardware KVM only when kvm_intel or kvm_amd is loaded (a /dev/kvm from kvm_pvm runs only
# kernels built for it, and a stock Debian kernel hangs there); otherwise TCG.
if [ -z "${ACCEL:-}" ]; then
    if [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then
        ACCEL=kvm
    else
        ACCEL=tcg
    fi
fi
if [ "$ACCEL" = kvm ]; then ACC=(-enable-kvm -cpu host); else ACC=(-accel "tcg,thread=multi" -cpu max); fi
if [ -z "${PORT:-}" ]; then
    PORT=$((12345 + $$ % 1000))
    while ss -Htan "sport = :$PORT" 2>/dev/null | grep -q .; do PORT=$((PORT + 1)); done
fi
IPS=(10.0.3.1 10.0.3.2)
boot() {   # boot NODE NETDEV-OPTION: replaces the subshell, so $! is timeout's pid
    local n=$1 peer=$((1 - $1))
    exec timeout "$TIMEOUT" qemu-system-x86_64 "${ACC[@]}" \
        -m "${MEM:-768}" -smp "${SMP:-1}" \
        -kernel "/boot/vmlinuz-$KVER" -initrd "$W/initramfs.cpio.gz" \
        -append "console=ttyS0 panic=-1 rdinit=/init loglevel=4 oxccl_node=$n oxccl_ip=${IPS[$n]} oxccl_peer=${IPS[$peer]}" \
        -netdev socket,id=n0,"$2" -device e1000,netdev=n0,mac=52:54:00:00:03:0$((n + 1)) \
        -display none -monitor none -serial file:"$W/node$n.log" -no-reboot </dev/null
}
ok() { [ -f "$W/node$1.log" ] && tr -d '\r' < "$W/node$1.log" | grep -aq 'extra rc=0$'; }

echo "booting 2 guests ($ACCEL, smp ${SMP:-1}, ${MEM:-768} MiB each, port $PORT, timeout ${TIMEOUT}s)"
rm -f "$W"/node0.log "$W"/node1.log
start=$(date +%s)
QRC=("" "")
STOPPED=(0 0)
boot 0 "listen=127.0.0.1:$PORT" & PIDS[0]=$!
# node 1 can only connect once node 0's QEMU listens
i=0
until ss -Htln "sport = :$PORT" 2>/dev/null | grep -q .; do
    if ! kill -0 "${PIDS[0]}" 2>/dev/null || [ $i -ge 100 ]; then
        echo "two-guests.sh: node 0's QEMU did not listen on 127.0.0.1:$PORT" >&2; break
    fi
    sleep 0.1; i=$((i + 1))
done
boot 1 "connect=127.0.0.1:$PORT" & PIDS[1]=$!

# Wait for both; once one has finished without success, stop the other rather than let it
# wait for a peer that is gone until the timeout.
left=2
while [ $left -gt 0 ]; do
    st=0; done_pid=""
    wait -n -p done_pid ${PIDS[0]} ${PIDS[1]} || st=$?
    [ -n "$done_pid" ] || break
    if [ "$done_pid" = "${PIDS[0]}" ]; then n=0; else n=1; fi
    QRC[$n]=$st; PIDS[$n]=""; left=$((left - 1))
    o=$((1 - n))
    if [ $left -gt 0 ] && ! ok $n; then
        echo "node$n finished without success (qemu exit status $st); stopping node$o"
        kill "${PIDS[$o]}" 2>/dev/null && STOPPED[$o]=1 || true
    fi
done
echo "both guests exited after $(( $(date +%s) - start ))s"
for n in 0 1; do
    echo "--- node$n (${IPS[$n]}, qemu exit status ${QRC[$n]:-?})"
    [ -f "$W/node$n.log" ] && tr -d '\r' < "$W/node$n.log" | grep -av '^$' || true
done
echo "---"

verdict() {   # what happened to node N, in words
    local clean rc
    clean=$( [ -f "$W/node$1.log" ] && tr -d '\r' < "$W/node$1.log" || true )
    rc=$(grep -ao 'extra rc=[0-9]*$' <<<"$clean" | tail -n 1 | cut -d= -f2 || true)
    if [ "$rc" = 0 ]; then echo "passed"
    elif [ -n "$rc" ]; then echo "/extra/run exited with $rc"
    elif grep -aq '=== peer unreachable' <<<"$clean"; then echo "could not ping its peer"
    elif [ "${STOPPED[$1]}" = 1 ]; then echo "stopped unfinished, after the other node failed"
    elif [ "${QRC[$1]}" = 124 ]; then echo "the guest did not finish within ${TIMEOUT}s"
    else echo "the guest did not finish (qemu exit status ${QRC[$1]:-?})"
    fi
}
if ok 0 && ok 1; then
    echo "guest runs passed (both nodes)"
    exit 0
fi
echo "guest run failed: node0: $(verdict 0); node1: $(verdict 1)"
exit 1
