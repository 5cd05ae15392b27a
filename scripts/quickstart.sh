#!/usr/bin/env bash
# podlet's first set-up command: install dependencies, build podlet, run its main job on
# embedded defaults: check the kernel (`podlet check-config`), run a real busybox container
# with `podlet-runc` from a bundle, then import a busybox image (from Debian's busybox-static,
# no registry needed) into podlet's store and `podlet run` it.
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
    rm -rf "$bundle" "$state" "$image_dir"
}
image_dir="$(mktemp -d /tmp/podlet-quickstart-image.XXXXXX)"
trap cleanup EXIT
mkdir -p "$bundle/rootfs/bin"
cp /bin/busybox "$bundle/rootfs/bin/busybox"
for applet in sh echo hostname cat id ls; do ln -s busybox "$bundle/rootfs/bin/$applet"; done
"$runc" spec --bundle "$bundle"
echo
echo "Running a busybox container with podlet-runc:"
echo 'echo "hello from inside a podlet container: host $(hostname), pid $$, uid $(id -u)"' |
    "$runc" --root "$state" run --bundle "$bundle" quickstart

# The same busybox as an image: a root filesystem tar imported into /var/lib/podlet.
mkdir -p "$image_dir/rootfs/bin" "$image_dir/rootfs/etc" "$image_dir/rootfs/tmp"
cp /bin/busybox "$image_dir/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$image_dir/rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$image_dir/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$image_dir/rootfs/etc/group"
tar -C "$image_dir/rootfs" -czf "$image_dir/busybox.tar.gz" .
echo
"$podlet" image import "$image_dir/busybox.tar.gz" busybox:latest >/dev/null
"$podlet" images
echo
echo "Running the busybox image with podlet run:"
"$podlet" run --rm --hostname podlet-demo busybox \
    sh -c 'echo "hello from podlet run: host $(hostname), pid $$, user $(id -un)"'
