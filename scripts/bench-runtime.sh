#!/usr/bin/env bash
# make bench-runtime: podlet-runc vs runc (Debian package) on the same busybox /bin/true
# bundle, in one hyperfine run: `run`, and `create && start && delete`. Also the peak RSS of
# one `run` of each. Results go to stdout as markdown (copy them into docs/benchmarks.md).
#
# runc is given a cgroupsPath below this shell's own memory cgroup (the machine's cgroup rule);
# every cgroup directory created for it that did not exist before is removed at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PODLET=${PODLET:-$ROOT/target/release/podlet-runc}
RUNC=${RUNC:-$(command -v runc)}
RUNS=${RUNS:-200}
[ "$(id -u)" -eq 0 ] || { echo "bench-runtime: run as root" >&2; exit 1; }
[ -x "$PODLET" ] || { echo "bench-runtime: build first (make release)" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "bench-runtime: hyperfine missing (apt install hyperfine)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/podlet-bench.XXXXXX)
MEMCG=$(awk -F: '$2=="memory"{print $3}' /proc/self/cgroup)
RUNC_PARENT="$MEMCG/podlet-bench-runc-$$"
# Candidate cgroup dirs runc may create (parent chain in every hierarchy, cgroup2 included),
# and which exist already.
candidates=()
for h in /sys/fs/cgroup/*/; do
    h=${h%/}
    [ -e "$h/cgroup.procs" ] || continue
    p="$h$RUNC_PARENT"
    while [ "$p" != "$h" ]; do candidates+=("$p"); p=$(dirname "$p"); done
done
existed=()
for d in "${candidates[@]}"; do [ -d "$d" ] && existed+=("$d"); done
cleanup() {
    set +e
    "$RUNC" --root "$WORK/runc-state" delete --force bench-r >/dev/null 2>&1 || true
    "$PODLET" --root "$WORK/podlet-state" delete --force bench-p >/dev/null 2>&1 || true
    # Deepest first; never a directory that existed before.
    printf '%s\n' "${candidates[@]}" | awk '{ print length, $0 }' | sort -rn | cut -d' ' -f2- |
    while read -r d; do
        # runc leaves the container's own cgroup only when it fails; remove its subtree.
        [ -d "$d/c" ] && rmdir "$d/c" 2>/dev/null
        skip=0
        for e in "${existed[@]}"; do [ "$e" = "$d" ] && skip=1; done
        [ $skip -eq 0 ] && [ -d "$d" ] && rmdir "$d" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/bundle/rootfs/bin"
cp /bin/busybox "$WORK/bundle/rootfs/bin/"
ln -s busybox "$WORK/bundle/rootfs/bin/true"
"$RUNC" spec --bundle "$WORK/bundle"
python3 - "$WORK/bundle/config.json" "$RUNC_PARENT/c" <<'PY'
import json, sys
path, cg = sys.argv[1], sys.argv[2]
c = json.load(open(path))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
c["linux"]["cgroupsPath"] = cg
json.dump(c, open(path, "w"))
PY

P="$PODLET --root $WORK/podlet-state"
R="$RUNC --root $WORK/runc-state"
B="$WORK/bundle"
echo "## podlet-runc vs runc ($(runc --version | head -1)), $RUNS runs each, $(nproc) cores"
echo
hyperfine --warmup 10 --runs "$RUNS" -N --style basic --export-markdown "$WORK/run.md" --export-json "$WORK/run.json" \
    -n "podlet-runc run" "$P run --bundle $B bench-p" \
    -n "runc run" "$R run --bundle $B bench-r" >&2
cat "$WORK/run.md"
echo
hyperfine --warmup 10 --runs "$RUNS" --style basic --export-markdown "$WORK/lifecycle.md" --export-json "$WORK/lifecycle.json" \
    -n "podlet-runc create+start+delete" "$P create --bundle $B bench-p && $P start bench-p && $P delete --force bench-p" \
    -n "runc create+start+delete" "$R create --bundle $B bench-r && $R start bench-r && $R delete --force bench-r" >&2
cat "$WORK/lifecycle.md"
echo
echo "| medians | podlet-runc [ms] | runc [ms] | podlet / runc |"
echo "|---|---:|---:|---:|"
for j in run lifecycle; do
    python3 - "$WORK/$j.json" "$j" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
p, q = r[0]["median"] * 1000, r[1]["median"] * 1000
print(f"| {sys.argv[2]} | {p:.1f} | {q:.1f} | {p / q:.2f} |")
PY
done
echo
rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
echo "| peak RSS of one \`run\` | KiB |"
echo "|---|---:|"
echo "| podlet-runc | $(rss $P run --bundle $B bench-p) |"
echo "| runc | $(rss $R run --bundle $B bench-r) |"
