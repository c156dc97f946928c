# meshlock: the two commands a newcomer needs are `make demo` and `make test`.
# Every Debian package the build, the tests, the demo and the benchmarks need
# is installed by `make deps` (as root, on Debian 12).

BUILD     ?= build
JOBS      ?= $(shell nproc)
CMAKE_ARGS ?=
# ccache, when installed, is used (several trees of one checkout share its cache).
CCACHE := $(shell command -v ccache 2>/dev/null)
ifneq ($(CCACHE),)
CMAKE_ARGS += -DCMAKE_C_COMPILER_LAUNCHER=$(CCACHE) -DCMAKE_CXX_COMPILER_LAUNCHER=$(CCACHE)
export CCACHE_BASEDIR ?= $(abspath $(CURDIR)/..)
export CCACHE_NOHASHDIR ?= 1
endif

DEB_PACKAGES := build-essential cmake pkg-config git \
  clang llvm libclang-rt-14-dev libbpf-dev bpftool linux-perf \
  liburing-dev android-libboringssl-dev libspdlog-dev libfmt-dev \
  libgtest-dev libgmock-dev libbenchmark-dev \
  libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libcivetweb-dev libcpp-httplib-dev libneon27-gnutls-dev \
  iproute2 nftables procps psmisc util-linux python3 \
  openssl curl haproxy stunnel4 iperf3 sockperf tcpdump tshark \
  prometheus graphviz python3-yaml python3-kubernetes \
  libnghttp2-dev protobuf-compiler libprotobuf-dev python3-grpcio python3-protobuf python3-h2 python3-cryptography
# Tools the deploy manifest tests need, installed from Debian only where the
# command is missing (a machine may already have them from elsewhere, and
# Debian's packages would conflict with those): kubectl renders the
# kustomizations, npm installs the pinned schema validator (tests/deploy).
DEB_COMMANDS := kubectl:kubernetes-client node:nodejs npm:npm

.PHONY: all deps kubectl-debian build test test-unit test-e2e test-asan fuzz demo bench clean

all: build

# Quiet when everything is present; otherwise apt-get update, then install.
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	  done; for c in $(DEB_COMMANDS); do command -v $${c%%:*} >/dev/null || echo $${c#*:}; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make deps: run as root to install:" $$missing >&2; exit 1; fi; \
	  echo "make deps: installing" $$missing; \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# Debian's kubectl (kubernetes-client, 1.20) for meshsim's API server tests. When
# another package owns /usr/bin/kubectl (google-cloud-sdk's), the two conflict:
# then the .deb is unpacked into $(BUILD)/tools/kubernetes-client instead, where
# meshsim and the tests find it (override with KUBECTL=...).
KUBECTL_DEBIAN := $(BUILD)/tools/kubernetes-client/usr/bin/kubectl
deps: kubectl-debian
kubectl-debian:
	@if dpkg-query -W -f='$${Status}' kubernetes-client 2>/dev/null | grep -q 'install ok installed'; then \
	  mkdir -p $(dir $(KUBECTL_DEBIAN)) && ln -sf /usr/bin/kubectl $(KUBECTL_DEBIAN); \
	elif [ -x $(KUBECTL_DEBIAN) ]; then :; \
	elif ! dpkg -S /usr/bin/kubectl >/dev/null 2>&1; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make deps: run as root to install kubernetes-client" >&2; exit 1; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null && \
	  mkdir -p $(dir $(KUBECTL_DEBIAN)) && ln -sf /usr/bin/kubectl $(KUBECTL_DEBIAN); \
	else \
	  tmp=$$(mktemp -d) && (cd $$tmp && apt-get download kubernetes-client >/dev/null 2>&1) && \
	  mkdir -p $(BUILD)/tools/kubernetes-client && dpkg-deb -x $$tmp/kubernetes-client_*.deb $(BUILD)/tools/kubernetes-client && \
	  rm -rf $$tmp && echo "make deps: Debian's kubectl unpacked into $(BUILD)/tools/kubernetes-client"; \
	fi

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

# Every test, unit and end-to-end (the end-to-end ones need root).
# Then each libFuzzer target for a few seconds (tests/fuzz; a tree of its own).
FUZZ_SMOKE_SECONDS ?= 3
test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) --timeout 900
	FUZZ_SEED=1 $(MAKE) fuzz FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS)

test-unit: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) -L unit

test-e2e: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) -L e2e

# The suite under AddressSanitizer + LeakSanitizer, in its own build tree.
test-asan: deps
	$(MAKE) build test BUILD=build-asan CMAKE_ARGS=-DMESHLOCK_ASAN=ON

# libFuzzer on every parser of outside input (tests/fuzz), in its own tree:
# FUZZ_SECONDS per target (default 60). `make test` runs each for a few
# seconds; crashers go to tests/fuzz/regressions/, replayed by the unit tests.
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
fuzz: deps
	cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Release -DMESHLOCK_FUZZ=ON $(CMAKE_ARGS) >/dev/null
	cmake --build $(FUZZ_BUILD) --target fuzz_all -j $(JOBS)
	bash tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

demo: build
	bash tests/demo/demo.sh $(BUILD)

# Engine vs HAProxy/stunnel over loopback, the full path on meshsim (root),
# micro-benchmarks; writes docs/benchmarks.md. About 12-15 minutes with the
# defaults; MESHLOCK_BENCH_SECONDS=2 for a quick check (tests/bench/README.md).
bench: build
	bash tests/bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) build-asan $(FUZZ_BUILD)
