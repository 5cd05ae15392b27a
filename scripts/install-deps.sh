#!/usr/bin/env bash
# Installs what podlet needs to build and test on Debian 12 / Ubuntu. Idempotent: it only
# calls apt when a package is missing, and only installs Rust when cargo is not there.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: run as root (apt-get needs it)" >&2
    exit 1
fi

PACKAGES=(
    build-essential   # cc for crates that build C
    make
    pkg-config
    ca-certificates
    curl
    iproute2          # ip(8), used by the multi-node test tier
    util-linux        # nsenter, unshare
    busybox-static    # a static rootfs for containers, and ping for network tests
    user-mode-linux   # the cgroup v2 test tier
    libseccomp-dev    # linux.seccomp is compiled with libseccomp
    podman            # drives podlet-runc in the compatibility test
    skopeo            # pushes images to the test registry
    docker-registry   # a real OCI registry on loopback for pull/push tests
    apache2-utils     # htpasswd, for the registry basic-auth test
    containernetworking-plugins  # the reference bridge + host-local for podlet-cni's tests
    hyperfine         # make bench-*
    protobuf-compiler # etcd-client's build compiles etcd's protos
    libprotobuf-dev   # the well-known .proto types they import
    etcd-server       # the master's etcd store is tested against a real etcd on loopback
    tar
)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: installing the Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi
echo "install-deps: ok ($(cargo --version))"
