# podlet's build and test entry points. `make test` is the README's test command.
SHELL := /bin/bash
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all deps build release install test test-unit check-config fmt clippy clean bench-runtime bench-run bench-cni bench-api bench-scheduler bench-pods bench-smoke bench-lb bench-dns conformance

all: build

deps:
	./scripts/install-deps.sh

build:
	$(CARGO) build --workspace --bins
	ln -sf podlet target/debug/podlet-runc

release:
	$(CARGO) build --release -p podlet -p podlet-cni
	ln -sf podlet target/release/podlet-runc

# Installs podlet and its runc-compatible name (the same binary) into $(PREFIX)/bin, and the
# CNI plugin where CNI runtimes look for plugins ($(CNI_BIN)).
PREFIX ?= /usr/local
CNI_BIN ?= /opt/cni/bin
install: release
	install -D -m 0755 target/release/podlet $(DESTDIR)$(PREFIX)/bin/podlet
	ln -sf podlet $(DESTDIR)$(PREFIX)/bin/podlet-runc
	install -D -m 0755 target/release/podlet-cni $(DESTDIR)$(CNI_BIN)/podlet-cni

# The whole suite: unit, host (root), cgroup v2 (UML or QEMU VM) and multi-node tiers, wrapped by the
# leak guard, which fails the run if anything was left behind. Ends with one summary line.
test: build
	@if [ "$$(id -u)" -ne 0 ]; then echo "make test: run as root (namespaces, mounts, cgroups)" >&2; exit 1; fi
	@set -u; \
	export PODLET_TEST_RUN="run-$$$$-$$(date +%s)"; \
	log=target/test-output.log; \
	./target/debug/podlet-leak-guard snapshot || exit 2; \
	status=0; \
	$(CARGO) test --workspace --no-fail-fast 2>&1 | tee $$log; status=$${PIPESTATUS[0]}; \
	./target/debug/podlet-leak-guard check || status=1; \
	$(CARGO) bench --bench smoke --profile dev 2>&1 | tee -a $$log; [ $${PIPESTATUS[0]} -eq 0 ] || status=1; \
	vmfile=target/debug/podlet-vm-cache/backend-$$PODLET_TEST_RUN; \
	echo "cgroup v2 tier: VM backend $$(cat $$vmfile 2>/dev/null || echo 'not used') ($$([ -n "$${PODLET_TEST_VM:-}" ] && echo forced || echo probed))"; \
	rm -f $$vmfile $$vmfile.lock; \
	awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($$i ~ /^passed;?$$/) p += $$(i-1); if ($$i ~ /^failed;?$$/) f += $$(i-1) } } END { printf "podlet: %d passed, %d failed\n", p, f }' $$log; \
	exit $$status

test-unit:
	$(CARGO) test --workspace --lib --bins

# podlet-runc vs runc with hyperfine (results: docs/benchmarks.md).
bench-runtime: release
	./scripts/bench-runtime.sh

# podlet run vs podman, podlet pull vs skopeo (results: docs/benchmarks.md).
bench-run: release
	./scripts/bench-run.sh

# podlet-cni vs containernetworking-plugins bridge+host-local (results: docs/benchmarks.md).
bench-cni: release
	./scripts/bench-cni.sh

# podlet master under load on SQLite and etcd (results: docs/benchmarks.md).
bench-api:
	$(CARGO) bench --bench api

# The scheduler: 10,000 pods onto 1,000 simulated nodes (results: docs/benchmarks.md).
bench-scheduler:
	$(CARGO) bench --bench scheduler

# Pod start-up through a master and three agents in node namespaces, 100 pods (docs/benchmarks.md).
# The master's RSS against benches/smoke-bounds.json (fails past +25 %); also the tail of
# `make test`. PODLET_SMOKE_RECORD=1 re-records the bounds.
bench-smoke: build
	$(CARGO) bench --bench smoke --profile dev

# Service traffic: wrk through a ClusterIP vs straight to the pod vs an nftables DNAT rule (docs/benchmarks.md).
bench-lb: release
	$(CARGO) bench --bench lb

# The agent's cluster DNS: dnsperf and a latency loop from a pod, beside CoreDNS's published figures.
bench-dns: release
	$(CARGO) bench --bench dns

bench-pods: release
	$(CARGO) build --release -p podlet-testkit --bins
	$(CARGO) bench --bench pods

# The OCI runtime-tools validation suite; RUNTIME_TOOLS=checkout built with Go (docs/conformance.md).
conformance: build
	./scripts/conformance.sh $(RUNTIME_TOOLS)

check-config: build
	./target/debug/podlet check-config

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
