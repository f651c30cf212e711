#!/usr/bin/env bash
# A cluster of N emulated hosts on this machine: one Linux network namespace per node, joined
# through a bridge that lives in its own "switch" namespace by veth pairs, each node's link
# optionally rate-limited with tc tbf. Nothing is created in the host's own namespace, the
# nodes have no default route and there is no NAT, so traffic cannot leave the cluster.
#
#   cluster.sh [--name ID] up N [--rate 1gbit|10gbit|500mbit|none] [--delay 1ms] [--mtu 9000]
#                                [--owner PID]
#   cluster.sh [--name ID] exec K -- command [args...]   run a command on node K (0-based)
#   cluster.sh [--name ID] addr K                        print node K's IPv4 address
#   cluster.sh [--name ID] nodes                         print the number of nodes
#   cluster.sh [--name ID] down                          remove everything of cluster ID
#   cluster.sh list                                      the clusters that exist now
#   cluster.sh cleanup-stale [--all]                     remove leftovers of dead runs
#
# Namespaces: oxn<ID>-<K> (node K, interface eth0 at 10.A.B.<K+1>/24) and oxn<ID>-sw (bridge
# br0, ports p<K>). ID defaults to this process's pid for `up`, and for the other commands to
# $OXCCL_NETNS_NAME or, when exactly one cluster exists, that one. See README.md here.
set -euo pipefail

PREFIX=oxn
# Who owns which cluster (one file per cluster holding the owner's pid), so that
# cleanup-stale leaves the clusters of runs that are still alive alone.
STATE_DIR=${OXCCL_NETNS_STATE_DIR:-/run/oxccl-netns}

die() {
    echo "cluster.sh: error: $*" >&2
    exit 1
}
note() { echo "cluster.sh: $*" >&2; }

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

valid_name() { [[ $1 =~ ^[a-z0-9]{1,12}$ ]]; }

# Every cluster name that has namespaces now.
cluster_names() {
    ip netns list 2>/dev/null | awk '{print $1}' | sed -n "s/^${PREFIX}\([a-z0-9]*\)-sw$/\1/p; s/^${PREFIX}\([a-z0-9]*\)-[0-9]*$/\1/p" | sort -u
}

# The cluster the command refers to: --name, else $OXCCL_NETNS_NAME, else the only one.
resolve_name() {
    if [[ -n ${NAME:-} ]]; then
        echo "$NAME"
        return
    fi
    if [[ -n ${OXCCL_NETNS_NAME:-} ]]; then
        echo "$OXCCL_NETNS_NAME"
        return
    fi
    local names
    names=$(cluster_names)
    if [[ -z $names ]]; then
        die "no cluster exists: start one with '$0 up N'"
    elif [[ $(wc -l <<<"$names") -gt 1 ]]; then
        die "several clusters exist ($(tr '\n' ' ' <<<"$names")): choose one with --name"
    fi
    echo "$names"
}

node_count() {
    local name=$1
    ip netns list 2>/dev/null | awk '{print $1}' | grep -c "^${PREFIX}${name}-[0-9][0-9]*$" || true
}

ip2int() {
    local a b c d
    IFS=. read -r a b c d <<<"$1"
    echo $(((a << 24) | (b << 16) | (c << 8) | d))
}

# Whether 10.$1.$2.0/24 overlaps a route or an address of the host's namespace. The cluster
# is isolated either way; keeping its subnet off the host's networks avoids any confusion
# between a cluster address and a real one in logs and topology dumps.
subnet_in_use() {
    local net
    net=$(ip2int "10.$1.$2.0")
    local prefix len base mask
    while read -r prefix; do
        [[ $prefix == default || -z $prefix ]] && continue
        [[ $prefix == */* ]] || prefix="$prefix/32"
        len=${prefix#*/}
        if ((len > 24)); then len=24; fi
        mask=$(((0xffffffff << (32 - len)) & 0xffffffff))
        base=$(ip2int "${prefix%/*}")
        if (((base & mask) == (net & mask))); then
            return 0
        fi
    done < <(
        ip -4 route show table all 2>/dev/null | awk '{print ($1 == "local" || $1 == "broadcast" || $1 == "unicast") ? $2 : $1}'
        ip -4 -o addr show 2>/dev/null | awk '{print $4}'
    )
    return 1
}

# Bytes per second of a tc rate such as 1gbit, 10gbit, 500mbit.
rate_bytes() {
    local r=${1,,} num unit
    [[ $r =~ ^([0-9]+)(kbit|mbit|gbit|bit)$ ]] || return 1
    num=${BASH_REMATCH[1]}
    unit=${BASH_REMATCH[2]}
    case $unit in
    bit) echo $((num / 8)) ;;
    kbit) echo $((num * 1000 / 8)) ;;
    mbit) echo $((num * 1000000 / 8)) ;;
    gbit) echo $((num * 1000000000 / 8)) ;;
    esac
}

# Shapes the egress of one interface: tbf at RATE, after a netem delay when DELAY is set.
shape() {
    local ns=$1 dev=$2 rate=$3 delay=$4
    local parent=root
    if [[ -n $delay ]]; then
        tc -n "$ns" qdisc add dev "$dev" root handle 1: netem delay "$delay" ||
            die "cannot add a netem delay on $dev in $ns: this kernel may lack sch_netem (--delay needs it)"
        parent="parent 1:1"
    fi
    if [[ -n $rate ]]; then
        local bps burst
        bps=$(rate_bytes "$rate")
        # Burst: 4 ms worth at the rate (enough for a 250 Hz timer to keep up), at least
        # 64 KiB so a whole TSO segment fits; the queue holds 20 ms before dropping.
        burst=$((bps / 250))
        if ((burst < 65536)); then burst=65536; fi
        # shellcheck disable=SC2086 # $parent is two words on purpose
        tc -n "$ns" qdisc add dev "$dev" $parent handle 10: tbf rate "$rate" burst "$burst" latency 20ms ||
            die "cannot add a tbf qdisc on $dev in $ns"
    fi
}

cmd_up() {
    local n="" rate="" delay="" mtu="" owner=$PPID
    while [[ $# -gt 0 ]]; do
        case $1 in
        --rate)
            [[ $# -ge 2 ]] || die "--rate needs a value (1gbit, 10gbit, none)"
            rate=$2
            shift 2
            ;;
        --delay)
            [[ $# -ge 2 ]] || die "--delay needs a value (e.g. 1ms)"
            delay=$2
            shift 2
            ;;
        --mtu)
            [[ $# -ge 2 && $2 =~ ^[0-9]+$ && $2 -ge 576 && $2 -le 65535 ]] || die "--mtu needs a value in 576..65535"
            mtu=$2
            shift 2
            ;;
        --owner)
            [[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || die "--owner needs a pid"
            owner=$2
            shift 2
            ;;
        -*) die "up: unknown option $1" ;;
        *)
            [[ -z $n ]] || die "up: unexpected argument $1"
            n=$1
            shift
            ;;
        esac
    done
    [[ $n =~ ^[0-9]+$ && $n -ge 1 && $n -le 250 ]] || die "up: the node count must be 1..250, got '${n}'"
    if [[ $rate == none ]]; then rate=""; fi
    if [[ -n $rate ]] && ! rate_bytes "$rate" >/dev/null; then
        die "--rate $rate: expected a number with kbit, mbit or gbit (e.g. 1gbit), or none"
    fi
    if [[ -n $delay && ! $delay =~ ^[0-9]+(\.[0-9]+)?(us|ms|s)$ ]]; then
        die "--delay $delay: expected a time such as 500us or 2ms"
    fi
    local name=${NAME:-$$}
    valid_name "$name" || die "cluster name '$name': use 1 to 12 lower-case letters or digits"
    local sw=${PREFIX}${name}-sw
    if ip netns list | awk '{print $1}' | grep -q "^${PREFIX}${name}-"; then
        die "cluster '$name' already exists ($(ip netns list | awk '{print $1}' | grep "^${PREFIX}${name}-" | tr '\n' ' ')): pick another --name or run '$0 --name $name down'"
    fi

    # A /24 of 10.0.0.0/8 derived from the name, moved on while it collides with the host's.
    local h a b tries=0
    h=$(cksum <<<"$name" | awk '{print $1}')
    a=$((100 + h % 150))
    b=$(((h / 150) % 256))
    while subnet_in_use "$a" "$b"; do
        tries=$((tries + 1))
        ((tries < 1000)) || die "no free 10.x.y.0/24 subnet found next to the host's routes"
        b=$(((b + 1) % 256))
        if ((b == 0)); then a=$((100 + (a - 99) % 150)); fi
    done

    mkdir -p "$STATE_DIR" 2>/dev/null || true
    echo "$owner" >"$STATE_DIR/$name" 2>/dev/null || true
    # From here on a failure (or Ctrl-C) removes what was built so far.
    BUILDING=$name

    ip netns add "$sw"
    ip -n "$sw" link set lo up
    ip -n "$sw" link add name br0 type bridge
    ip -n "$sw" link set br0 up
    local k ns
    for ((k = 0; k < n; k++)); do
        ns=${PREFIX}${name}-$k
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        # The pair is made in the switch namespace and its other end moved straight into the
        # node: no interface ever appears in the host's namespace, and names cannot collide
        # between clusters.
        ip -n "$sw" link add name "p$k" type veth peer name eth0 netns "$ns"
        if [[ -n $mtu ]]; then
            ip -n "$sw" link set "p$k" mtu "$mtu"
            ip -n "$ns" link set eth0 mtu "$mtu"
        fi
        ip -n "$sw" link set "p$k" master br0
        ip -n "$sw" link set "p$k" up
        ip -n "$ns" addr add "10.$a.$b.$((k + 1))/24" dev eth0
        ip -n "$ns" link set eth0 up
        # A link limited in both directions: the node's egress and the switch port's egress
        # (traffic towards the node).
        if [[ -n $rate || -n $delay ]]; then
            shape "$ns" eth0 "$rate" "$delay"
            shape "$sw" "p$k" "$rate" "$delay"
        fi
    done

    # Wait (bounded) until every link is up on both ends and every switch port forwards, so a
    # job started right after `up` does not race the links coming up.
    local deadline=$((SECONDS + 10))
    for ((k = 0; k < n; k++)); do
        until ip -n "${PREFIX}${name}-$k" -o link show dev eth0 | grep -q "state UP" &&
            bridge -n "$sw" link show dev "p$k" 2>/dev/null | grep -q "state forwarding"; do
            ((SECONDS < deadline)) || die "node $k's link is not up after 10 s (cluster removed)"
            sleep 0.1
        done
    done
    BUILDING=""
    note "cluster $name up: $n nodes on 10.$a.$b.0/24 (node k = 10.$a.$b.<k+1>), link rate ${rate:-unlimited}${mtu:+, MTU $mtu}${delay:+, delay $delay per direction}"
    echo "$name"
}

cmd_addr() {
    local k=${1:-}
    [[ $k =~ ^[0-9]+$ ]] || die "addr: expected a node index, got '${k}'"
    local name
    name=$(resolve_name)
    local ns=${PREFIX}${name}-$k
    ip netns list | awk '{print $1}' | grep -qx "$ns" || die "cluster '$name' has no node $k (nodes: $(node_count "$name"))"
    ip -n "$ns" -4 -o addr show dev eth0 | awk '{split($4, a, "/"); print a[1]; exit}'
}

cmd_exec() {
    local k=${1:-}
    [[ $k =~ ^[0-9]+$ ]] || die "exec: expected a node index, got '${k}'"
    shift
    [[ ${1:-} == -- ]] && shift
    [[ $# -gt 0 ]] || die "exec: no command given (exec K -- command args...)"
    local name
    name=$(resolve_name)
    local ns=${PREFIX}${name}-$k
    ip netns list | awk '{print $1}' | grep -qx "$ns" || die "cluster '$name' has no node $k (nodes: $(node_count "$name"))"
    exec ip netns exec "$ns" "$@"
}

# Kills what still runs inside one namespace (processes the harness started), then deletes it.
remove_ns() {
    local ns=$1 pids i
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    if [[ -n $pids ]]; then
        # shellcheck disable=SC2086 # one pid per word
        kill -TERM $pids 2>/dev/null || true
        for ((i = 0; i < 30; i++)); do
            pids=$(ip netns pids "$ns" 2>/dev/null || true)
            [[ -z $pids ]] && break
            sleep 0.1
        done
        if [[ -n $pids ]]; then
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null || true
        fi
    fi
    ip netns del "$ns" 2>/dev/null || true
}

cmd_down() {
    local name
    name=$(resolve_name)
    valid_name "$name" || die "cluster name '$name' is not valid"
    local ns found=0
    # Nodes first, the switch last: deleting a node's namespace takes its veth pair with it.
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${PREFIX}${name}-" | sort -r); do
        remove_ns "$ns"
        found=1
    done
    rm -f "$STATE_DIR/$name" 2>/dev/null || true
    local left
    left=$(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${PREFIX}${name}-" || true)
    [[ -z $left ]] || die "could not remove: $left"
    if ((found)); then note "cluster $name removed"; else note "cluster $name did not exist"; fi
}

cmd_list() {
    local name owner
    for name in $(cluster_names); do
        owner=$(cat "$STATE_DIR/$name" 2>/dev/null || echo "?")
        echo "$name nodes=$(node_count "$name") owner=$owner"
    done
}

cmd_cleanup_stale() {
    local all=0
    [[ ${1:-} == --all ]] && all=1
    local name owner removed=0
    for name in $(cluster_names); do
        owner=$(cat "$STATE_DIR/$name" 2>/dev/null || true)
        if ((!all)) && [[ -n $owner ]] && kill -0 "$owner" 2>/dev/null; then
            note "keeping cluster $name: its owner (pid $owner) is still running (--all removes it too)"
            continue
        fi
        NAME=$name cmd_down
        removed=$((removed + 1))
    done
    # Anything else named like ours (a half-built cluster, an odd name).
    local ns
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${PREFIX}" || true); do
        name=${ns#"$PREFIX"}
        name=${name%-*}
        owner=$(cat "$STATE_DIR/$name" 2>/dev/null || true)
        if ((!all)) && [[ -n $owner ]] && kill -0 "$owner" 2>/dev/null; then
            continue
        fi
        remove_ns "$ns"
        removed=$((removed + 1))
    done
    note "cleanup-stale: removed $removed cluster(s) or namespace(s)"
}

# The cluster `up` is building: removed again if the script stops before it is complete.
BUILDING=""
on_exit() {
    if [[ -n $BUILDING ]]; then
        note "setup of cluster $BUILDING did not complete: removing it"
        NAME=$BUILDING cmd_down >/dev/null 2>&1 || true
    fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

NAME=""
while [[ $# -gt 0 ]]; do
    case $1 in
    --name)
        [[ $# -ge 2 ]] || die "--name needs a value"
        NAME=$2
        valid_name "$NAME" || die "cluster name '$NAME': use 1 to 12 lower-case letters or digits"
        shift 2
        ;;
    -h | --help) usage ;;
    *) break ;;
    esac
done
[[ $# -ge 1 ]] || usage
command -v ip >/dev/null || die "'ip' (iproute2) is not installed"
cmd=$1
shift
case $cmd in
up) cmd_up "$@" ;;
exec) cmd_exec "$@" ;;
addr) cmd_addr "$@" ;;
nodes) node_count "$(resolve_name)" ;;
down) cmd_down ;;
list) cmd_list ;;
cleanup-stale) cmd_cleanup_stale "$@" ;;
*) die "unknown command '$cmd' (up, exec, addr, nodes, down, list, cleanup-stale)" ;;
esac
