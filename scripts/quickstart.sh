#!/usr/bin/env bash
# podlet's first set-up command: install dependencies, build podlet, run its main job on
# embedded defaults. Today that is `podlet check-config`: every kernel feature podlet uses,
# probed for real, and the cgroup root podlet would use (below the cgroup you started it in).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --bin podlet
echo
./target/release/podlet check-config
