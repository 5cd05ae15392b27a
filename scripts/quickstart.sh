#!/usr/bin/env bash
# podlet's first set-up command: install dependencies, build podlet, run its main job on
# embedded defaults: check the kernel (`podlet check-config`), then run a real busybox
# container with `podlet-runc` and print from inside it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --bin podlet
ln -sf podlet target/release/podlet-runc
podlet="$PWD/target/release/podlet"
runc="$PWD/target/release/podlet-runc"

echo
"$podlet" check-config

# A busybox bundle from Debian's busybox-static; removed on exit.
bundle="$(mktemp -d /tmp/podlet-quickstart.XXXXXX)"
state="$bundle.state"
cleanup() {
    "$runc" --root "$state" delete --force quickstart >/dev/null 2>&1 || true
    rm -rf "$bundle" "$state"
}
trap cleanup EXIT
mkdir -p "$bundle/rootfs/bin"
cp /bin/busybox "$bundle/rootfs/bin/busybox"
for applet in sh echo hostname cat id ls; do ln -s busybox "$bundle/rootfs/bin/$applet"; done
"$runc" spec --bundle "$bundle"
echo
echo "Running a busybox container with podlet-runc:"
echo 'echo "hello from inside a podlet container: host $(hostname), pid $$, uid $(id -u)"' |
    "$runc" --root "$state" run --bundle "$bundle" quickstart
