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

# Options, packages, guest kernel, initramfs tree, KVM or TCG, console logs: lib.sh.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh" two-guests.sh
parse_args "$@"
make_workdir oxccl-softroce2
install_packages
choose_kernel
build_tree

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
pack_initramfs

# --- boot ------------------------------------------------------------------------------------
choose_accel
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
ok() { console_passed "$W/node$1.log"; }

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
    show_console "$W/node$n.log"
done
echo "---"

verdict() {   # what happened to node N, in words
    local clean rc
    clean=$(console "$W/node$1.log")
    rc=$(console_rc "$W/node$1.log")
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
