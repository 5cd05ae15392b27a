#!/usr/bin/env bash
# Runs the opencontainers/runtime-tools validation suite against podlet-runc and prints, per
# test, the counts of passed / failed / skipped checks (the table in docs/conformance.md).
#
#   scripts/conformance.sh RUNTIME_TOOLS_DIR [RUNTIME]
#
# RUNTIME_TOOLS_DIR is a checkout of github.com/opencontainers/runtime-tools built with
# `make runtimetest validation-executables` (Go >= 1.21; Debian bookworm-backports has
# golang-1.23-go). It is never part of this repository. RUNTIME defaults to the podlet-runc
# next to the debug build. Run as root.
set -uo pipefail

RT_DIR=${1:?usage: conformance.sh RUNTIME_TOOLS_DIR [RUNTIME]}
RUNTIME=${2:-$(cd "$(dirname "$0")/.." && pwd)/target/debug/podlet-runc}
LOGS=${LOGS:-$(mktemp -d)}
mkdir -p "$LOGS"
cd "$RT_DIR" || exit 1
[ -x runtimetest ] || { echo "conformance: build runtimetest first (make runtimetest validation-executables)" >&2; exit 1; }

printf '| test | ok | not ok | skip |\n|---|---:|---:|---:|\n'
total_ok=0 total_fail=0 total_skip=0
for t in validation/*/*.t; do
    name=$(basename "$t" .t)
    log="$LOGS/$name.tap"
    RUNTIME="$RUNTIME" timeout 300 "$t" >"$log" 2>&1
    rc=$?
    ok=$(grep -E '^ok ' "$log" | grep -vc '# SKIP')
    skip=$(grep -Ec '^ok .*# SKIP' "$log")
    fail=$(grep -Ec '^not ok' "$log")
    # The *_fail tests print no TAP at all: exit 0 is their pass, anything else a failure.
    if ! grep -qE '^1\.\.[0-9]+' "$log" && [ "$fail" -eq 0 ] && [ "$ok" -eq 0 ]; then
        if [ $rc -eq 0 ]; then ok=1; else fail=1; fi
    fi
    # Some tests print only an "error" diagnostic and an empty plan (1..0) when they fail.
    if grep -qE '^1\.\.0$' "$log" && grep -q '"error":' "$log"; then
        fail=$((fail + 1))
    fi
    [ $rc -eq 124 ] && fail=$((fail + 1))
    total_ok=$((total_ok + ok)); total_fail=$((total_fail + fail)); total_skip=$((total_skip + skip))
    printf '| %s | %d | %d | %d |\n' "$name" "$ok" "$fail" "$skip"
done
printf '| **total** | **%d** | **%d** | **%d** |\n' "$total_ok" "$total_fail" "$total_skip"
echo "conformance: TAP logs in $LOGS" >&2
