#!/usr/bin/env bash
# make bench-cni: ADD+DEL of one pod, podlet-cni vs Debian's containernetworking-plugins
# bridge + host-local, the same network config, in one hyperfine run. Results go to stdout as
# markdown (copy them into docs/benchmarks.md).
#
# Everything happens in a network namespace this script unshares for itself (the "node") and a
# pod namespace held by a child; nothing touches the host's network namespace.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PODLET_CNI=${PODLET_CNI:-$ROOT/target/release/podlet-cni}
REF_DIR=${REF_DIR:-/usr/lib/cni}
RUNS=${RUNS:-300}
[ "$(id -u)" -eq 0 ] || { echo "bench-cni: run as root" >&2; exit 1; }
[ -x "$PODLET_CNI" ] || { echo "bench-cni: build first (make release)" >&2; exit 1; }
[ -x "$REF_DIR/bridge" ] || { echo "bench-cni: $REF_DIR/bridge missing (apt install containernetworking-plugins)" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "bench-cni: hyperfine missing (apt install hyperfine)" >&2; exit 1; }

if [ -z "${PODLET_BENCH_NODE:-}" ]; then
    exec unshare --net env PODLET_BENCH_NODE=1 "$0" "$@"
fi

WORK=$(mktemp -d /tmp/podlet-bench-cni.XXXXXX)
unshare --net sleep 100000 &
POD=$!
# `wait` on the killed holder returns 143; under `set -e` that became the script's status.
cleanup() { kill "$POD" 2>/dev/null || true; wait "$POD" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
ip link set lo up

for kind in podlet bridge; do
    type=$([ $kind = podlet ] && echo podlet-cni || echo bridge)
    cat > "$WORK/$kind.json" <<JSON
{"cniVersion":"1.0.0","name":"bench-$kind","type":"$type","bridge":"b-$kind","isGateway":true,
 "ipam":{"type":"host-local","ranges":[[{"subnet":"10.$([ $kind = podlet ] && echo 61 || echo 62).0.0/24"}]],
 "routes":[{"dst":"0.0.0.0/0"}],"dataDir":"$WORK/ipam"}}
JSON
done
cat > "$WORK/cycle.sh" <<'SH'
#!/bin/sh
# ADD then DEL of one attachment: $1 = plugin executable, $2 = config, $3 = CNI_PATH.
export CNI_CONTAINERID=bench CNI_IFNAME=eth0 CNI_NETNS=/proc/$POD/ns/net CNI_PATH=$3
CNI_COMMAND=ADD "$1" < "$2" > /dev/null && CNI_COMMAND=DEL "$1" < "$2" > /dev/null
SH
chmod +x "$WORK/cycle.sh"
export POD

echo "## podlet-cni vs containernetworking-plugins $(dpkg-query -W -f '${Version}' containernetworking-plugins 2>/dev/null || echo '?') bridge + host-local: ADD+DEL per pod, $RUNS runs each, $(nproc) cores"
echo
hyperfine --warmup 10 --runs "$RUNS" -N --style basic --export-markdown "$WORK/cni.md" --export-json "$WORK/cni.json" \
    -n "podlet-cni ADD+DEL" "$WORK/cycle.sh $PODLET_CNI $WORK/podlet.json /nonexistent" \
    -n "bridge+host-local ADD+DEL" "$WORK/cycle.sh $REF_DIR/bridge $WORK/bridge.json $REF_DIR" >&2
cat "$WORK/cni.md"
echo
echo "| medians | podlet-cni [ms] | bridge+host-local [ms] | podlet / reference |"
echo "|---|---:|---:|---:|"
python3 - "$WORK/cni.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
p, q = r[0]["median"] * 1000, r[1]["median"] * 1000
print(f"| ADD+DEL | {p:.1f} | {q:.1f} | {p / q:.2f} |")
PY
