# Hypernetes: set up a Debian 12 machine, build the guest, run the demo and the tests.
# `make demo` is the README's first command, `make test` its second.

PYTHON ?= python3
VENV ?= .venv
KERNEL_DIR ?= /var/cache/hypernetes/kernels
export HYPERNETES_KERNEL_DIR := $(KERNEL_DIR)

APT_PACKAGES = qemu-system-x86 qemu-utils linux-source-6.1 linux-image-cloud-amd64 \
	busybox-static musl-tools erofs-utils e2fsprogs nftables iproute2 docker-registry skopeo \
	umoci crun runsc openssl flex bison bc libelf-dev libssl-dev cpio xz-utils make gcc kmod \
	keystone dnsutils curl etcd-server etcd-client ceph-mon ceph-mgr ceph-osd ceph-common qemu-block-extra fio

.PHONY: setup apt venv guest kernel demo registry test check lint bench clean

setup: apt venv guest kernel

apt:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			--no-install-recommends $(APT_PACKAGES); fi

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

guest:
	$(MAKE) -C guest

kernel:
	guest/kernel/build.sh $(KERNEL_DIR)

demo: setup
	$(VENV)/bin/python tools/demo.py

# Debian's docker-registry on 127.0.0.1:$(REGISTRY_PORT) with busybox:1 pushed, for the README.
REGISTRY_PORT ?= 5000
REGISTRY_DIR ?= /var/lib/hypernetes-registry
registry: setup
	$(VENV)/bin/python tools/registry.py start --port $(REGISTRY_PORT) --dir $(REGISTRY_DIR)

# Coverage floor: line coverage of hypernetes/ in the pytest process (pyproject.toml
# [tool.coverage]). Measured 2026-12-07 on 23 fast test files (API semantics, watch, schema, units;
# replicaset, deployment, job, namespace controllers; image unpack, manifest, reference; SQLite
# store; scheduler; guest protocol; DNS; tenant isolation; node pods; CLI identity; volume and
# network APIs): 56.9% of 26,856 statements. Both `make test` and `make check` run those files
# and more, and a suite covers every line a subset of it covers, so 55 holds for both until
# coverage is lost. Raise it from the total a full run prints; never lower it to pass.
# Cost: +14-15% wall time on CPU-bound API tests (ABBA, 5 files, 41 -> 47 s); VM-bound tests should
# pay less (the time QEMU runs is not traced), not measured.
COVERAGE_FLOOR ?= 55
COVERAGE = --cov --cov-report=term --cov-fail-under=$(COVERAGE_FLOOR)
# The whole suite (`make test`, what CI runs) covered 87.8% of 34,661 statements on 2026-12-07
# (a clean-clone .ci/run: 3,841 tests in 34 min); its floor sits a little under that.
test: COVERAGE_FLOOR = 86

test: setup lint
	$(VENV)/bin/pytest -m "" -q --durations=30 $(COVERAGE)

check: lint
	$(VENV)/bin/pytest -m "not slow" -q $(COVERAGE)

lint:
	$(VENV)/bin/ruff check hypernetes tests bench tools
	$(VENV)/bin/ruff format --check hypernetes tests bench tools
	$(VENV)/bin/mypy

bench: setup
	$(VENV)/bin/python bench/startup.py

clean:
	$(MAKE) -C guest clean
