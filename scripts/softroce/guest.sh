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

# Options, packages, guest kernel, initramfs tree, KVM or TCG, console logs: lib.sh.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh" guest.sh
parse_args "$@"
make_workdir oxccl-softroce
LOG=$W/console.log
install_packages
choose_kernel
build_tree

# The guest: mounts, modules, 10.0.2.15 on eth0 (QEMU's user network), rxe0 on top, then
# /extra/run; the console gets "extra rc=N".
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
pack_initramfs

# --- boot ------------------------------------------------------------------------------------
choose_accel
echo "booting ($ACCEL, smp ${SMP:-2}, ${MEM:-1024} MiB, timeout ${TIMEOUT}s)"
rm -f "$LOG"
start=$(date +%s)
qrc=0
timeout "$TIMEOUT" qemu-system-x86_64 "${ACC[@]}" -m "${MEM:-1024}" -smp "${SMP:-2}" \
    -kernel "/boot/vmlinuz-$KVER" -initrd "$W/initramfs.cpio.gz" \
    -append "console=ttyS0 panic=-1 rdinit=/init loglevel=4" \
    -netdev user,id=n0 -device e1000,netdev=n0 \
    -display none -monitor none -serial file:"$LOG" -no-reboot </dev/null &
PIDS[0]=$!
wait "${PIDS[0]}" || qrc=$?
PIDS[0]=""
echo "qemu exited with $qrc after $(( $(date +%s) - start ))s"
echo "--- guest console"
show_console "$LOG"
echo "---"

if console_passed "$LOG"; then
    echo "guest run passed"
    exit 0
fi
rc=$(console_rc "$LOG")
if [ -n "$rc" ]; then
    echo "guest run failed: /extra/run exited with $rc"
elif [ "$qrc" = 124 ]; then
    echo "guest run failed: the guest did not finish within ${TIMEOUT}s"
else
    echo "guest run failed: the guest did not finish (qemu exit status $qrc)"
fi
exit 1
