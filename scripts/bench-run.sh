#!/usr/bin/env bash
# make bench-run: `podlet run --rm busybox true` vs `podman --runtime runc run --rm busybox true`
# (the same imported busybox image), and pulling a 3-layer image from a loopback registry,
# podlet vs `skopeo copy` to a directory — each pair in one hyperfine run. Prints markdown.
#
# podman runs as MACHINE.md says it must here: cgroupfs, a cgroup parent below this shell's
# own memory cgroup, no network. Everything it or the registry creates is removed at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PODLET=${PODLET:-$ROOT/target/release/podlet}
RUNS=${RUNS:-50}
[ "$(id -u)" -eq 0 ] || { echo "bench-run: run as root" >&2; exit 1; }
[ -x "$PODLET" ] || { echo "bench-run: build first (make release)" >&2; exit 1; }
for t in hyperfine podman skopeo docker-registry; do
    command -v "$t" >/dev/null || { echo "bench-run: $t missing (scripts/install-deps.sh)" >&2; exit 1; }
done

W=$(mktemp -d /tmp/podlet-bench-run.XXXXXX)
MEMCG=$(awk -F: '$2=="memory"{print $3}' /proc/self/cgroup)
PARENT="$MEMCG/podlet-bench-podman-$$"
host_dirs=()
for d in /var/lib/containers /run/containers /run/libpod; do [ -e "$d" ] || host_dirs+=("$d"); done
candidates=()
for h in /sys/fs/cgroup/*/; do
    h=${h%/}
    [ -e "$h/cgroup.procs" ] || continue
    p="$h$PARENT"
    while [ "$p" != "$h" ]; do candidates+=("$p"); p=$(dirname "$p"); done
done
existed=()
for d in "${candidates[@]}"; do [ -d "$d" ] && existed+=("$d"); done
REG_PID=""
PM="podman --root $W/podman/root --runroot $W/podman/run --tmpdir $W/podman/tmp --cgroup-manager=cgroupfs"
cleanup() {
    set +e
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null || true
    $PM rm -af >/dev/null 2>&1 || true
    $PM system reset -f >/dev/null 2>&1 || true
    grep -o " $W[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    printf '%s\n' "${candidates[@]}" | awk '{ print length, $0 }' | sort -rn | cut -d' ' -f2- |
    while read -r d; do
        skip=0
        for e in "${existed[@]}"; do [ "$e" = "$d" ] && skip=1; done
        if [ $skip -eq 0 ] && [ -d "$d" ]; then
            find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
        fi
    done
    for d in "${host_dirs[@]}"; do rm -rf "$d"; done
    rm -rf "$W"
}
trap cleanup EXIT

# Prints a hyperfine JSON export as a markdown table and the first/second median ratio.
table() {
    python3 - "$1" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
print("| command | median [ms] | mean [ms] | min [ms] | max [ms] |")
print("|---|---:|---:|---:|---:|")
for x in r:
    print(f"| `{x['command']}` | {x['median']*1000:.1f} | {x['mean']*1000:.1f} | {x['min']*1000:.1f} | {x['max']*1000:.1f} |")
print(f"\n{sys.argv[2]} median: **{r[0]['median'] / r[1]['median']:.2f}**")
PY
}

# The busybox image, for both.
mkdir -p "$W/rootfs/bin"
cp /bin/busybox "$W/rootfs/bin/"
for a in sh true echo; do ln -s busybox "$W/rootfs/bin/$a"; done
tar -C "$W/rootfs" -cf "$W/busybox.tar" .
P="$PODLET --root $W/podlet --state $W/podlet-state"
$P image import "$W/busybox.tar" busybox >/dev/null
$PM import "$W/busybox.tar" localhost/busybox >/dev/null 2>&1
PMRUN="$PM run --rm --network=none --cgroup-parent=$PARENT --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 --runtime runc localhost/busybox true"

echo "## podlet run vs podman (runc) run, $RUNS runs each, $(nproc) cores"
echo
hyperfine --warmup 3 --runs "$RUNS" -N --style basic --export-json "$W/run.json" \
    -n "podlet run --rm busybox true" "$P run --rm busybox true" \
    -n "podman --runtime runc run --rm busybox true" "$PMRUN" >&2
table "$W/run.json" "podlet / podman"

# A 3-layer image on a loopback registry.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' "$W/registry" "$PORT" >"$W/registry.yml"
docker-registry serve "$W/registry.yml" >/dev/null 2>&1 &
REG_PID=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.05; done
python3 - "$W/layout" <<'PY'
# An OCI layout with three gzip layers (busybox, then two layers of random data).
import gzip, hashlib, io, json, os, sys, tarfile
out = sys.argv[1]
os.makedirs(f"{out}/blobs/sha256")
def blob(data):
    d = hashlib.sha256(data).hexdigest()
    open(f"{out}/blobs/sha256/{d}", "wb").write(data)
    return "sha256:" + d, len(data)
layers, diffs = [], []
def layer(files):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        for name, data, mode in files:
            i = tarfile.TarInfo(name); i.size = len(data); i.mode = mode
            t.addfile(i, io.BytesIO(data))
    tar = raw.getvalue()
    diffs.append("sha256:" + hashlib.sha256(tar).hexdigest())
    d, n = blob(gzip.compress(tar, 1))
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n})
layer([("bin/busybox", open("/bin/busybox", "rb").read(), 0o755)])
layer([("data/one", os.urandom(4 << 20), 0o644)])
layer([("data/two", os.urandom(4 << 20), 0o644)])
cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/busybox", "true"]},
                  "rootfs": {"type": "layers", "diff_ids": diffs}}).encode()
cd, cn = blob(cfg)
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
                  "layers": layers}).encode()
md, mn = blob(man)
json.dump({"imageLayoutVersion": "1.0.0"}, open(f"{out}/oci-layout", "w"))
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
          "digest": md, "size": mn, "annotations": {"org.opencontainers.image.ref.name": "three"}}]},
          open(f"{out}/index.json", "w"))
PY
skopeo copy -q --dest-tls-verify=false "oci:$W/layout:three" "docker://localhost:$PORT/bench/three:1"
echo
echo "## pulling a 3-layer image (8.5 MB) from a loopback registry, $RUNS runs each"
echo
hyperfine --warmup 2 --runs "$RUNS" --style basic --export-json "$W/pull.json" \
    --prepare "rm -rf $W/pull-podlet $W/pull-skopeo" \
    -n "podlet pull" "$PODLET --root $W/pull-podlet pull localhost:$PORT/bench/three:1" \
    -n "skopeo copy to dir" "skopeo copy -q --src-tls-verify=false docker://localhost:$PORT/bench/three:1 dir:$W/pull-skopeo" >&2
table "$W/pull.json" "podlet / skopeo"
