# rawdax: top-level entry points. See README.md.
#   make run    deps, build, then `rawdax serve` on ./rawdax-data (namespace `default`, 256M)
#   make test   deps, build, all tests on this machine's kernel and media
#   make test-guest  the suites on real DAX under Debian 12's kernel, in QEMU (docs/guest.md)
#   make powercut  POWERCUT_CUTS guest power cuts amid every region operation (ext4 disk, devdax)
#   make mutation-check  each metadata fsync dropped in turn: does the power-cut test catch it?
#   make powercut-carve  CARVE_CUTS power cuts amid namespace creates and destroys on devdax
#   make deps   install every Debian package the build, tests and peers need (apt-get)

SHELL      := /bin/bash
BUILD      ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
FUZZ_BUILD ?= build-fuzz
# The plain user `make test-user` runs the suite as (created if missing).
CI_USER    ?= rawdax-ci
FUZZ_SECONDS ?= 30
# A hang (30 s on one input) or an unbounded allocation counts as a crash.
FUZZ_FLAGS ?= -timeout=30 -rss_limit_mb=2048 -malloc_limit_mb=512
# How long `make soak` runs `rawdax serve` under mixed load (CI: 120).
SOAK_SECONDS ?= 600
# The concurrency tests: live ref, teardown, resize, freeze, the engines,
# live snapshots, the NBD server (its threads against real clients and bad
# ones, and over TLS; the 256 MiB copy is left out), the control socket (conflicts
# included), the holder-freeze protocol on its own (HolderFreezes*) and the
# servers' accept loop (connects racing stop()). Not the SIGBUS-safe copy:
# under TSan a guarded write that faults dies of the SIGBUS (TSan's
# memcpy/memset interceptors stand between the fault and the recovery); ASan
# and the plain build run its thread test.
TSAN_TESTS ?= LiveRef|FaultingThreadSnapshotTest|PageFill|LazyRestoreTest.Stress|Teardown|Resize|Freeze|SegvParking|DirtyBitmap|WriteTracker|SnapshotTest.Stress|SnapshotTest.AStoreAhead|SnapshotTest.IncrementalFreeze|SnapshotTest.ParallelAcross|SnapshotTest.SerializedWithin|NbdCodec|NbdServe|NbdE2e|NbdBadInput|NbdTls|Control|HolderFreezes|AcceptLoop|NbdSnapshot|SnapshotExport|SnapshotImage
WERROR     ?= OFF
REGION     ?= ./rawdax-data
CTEST_J    ?= 2
# Every ctest run: a pattern or label that selects no test is an error.
# Its output goes to ctest.out in the build tree, and CTEST_CHECK, run there
# after ctest, fails the stage on a test "Not Run" (disabled or not built),
# a skipped one (GTEST_SKIP passes in ctest's eyes) or a run of no test.
CTEST      := ctest -j$(CTEST_J) --output-on-failure --no-tests=error
CTEST_CHECK := $(CURDIR)/tests/check_ctest.sh ctest.out

# Build, test and peer packages. Peers (nbdkit, libnbd, qemu-img, fio, GnuTLS's
# certtool and psktool for the TLS tests, and QEMU with a Debian kernel,
# busybox, ndctl and mke2fs for the guest) serve the end-to-end tests, which
# never skip in CI because they are installed here.
DEB_PACKAGES := cmake ninja-build g++ clang libclang-rt-14-dev pkg-config \
  libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev libcli11-dev \
  libxxhash-dev liburing-dev libgnutls28-dev gnutls-bin \
  nbdkit libnbd-bin python3-libnbd qemu-utils fio jq bc \
  qemu-system-x86 linux-image-amd64 busybox-static ndctl e2fsprogs cpio xz-utils

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps build run test test-user test-asan test-tsan test-guest test-guest-full powercut mutation-check powercut-carve fuzz soak bench bench-nbd bench-vm clean

deps:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "make deps: all packages present"; fi

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DRAWDAX_WERROR=$(WERROR)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD)

run: build
	$(BUILD)/rawdax serve --region $(REGION)

test: build
	cd $(BUILD) && set -o pipefail && $(CTEST) | tee ctest.out && $(CTEST_CHECK)

# The suite as a plain user (vm.unprivileged_userfaultfd stays as it is): run
# as root, it creates the system user $(CI_USER) if missing, lends it the
# build tree (the tests write their scratch files in $(BUILD)/test-scratch and
# ctest its logs there), runs ctest as that user and takes the tree back, pass
# or fail. Tests labelled root (suites *AsRoot) are left out.
test-user: build
	@[ "$$(id -u)" = 0 ] || { echo "make test-user: run it as root (it runs the tests as $(CI_USER))" >&2; exit 1; }
	id -u $(CI_USER) >/dev/null 2>&1 || \
	  useradd --system --user-group --no-create-home --home-dir /nonexistent \
	    --shell /usr/sbin/nologin $(CI_USER)
	tests/reach_for_users.sh $(BUILD)
	mkdir -p $(BUILD)/home
	chown -R $(CI_USER): $(BUILD)
	cd $(BUILD) && set -o pipefail && status=0 && \
	  { setpriv --reuid=$(CI_USER) --regid=$(CI_USER) --init-groups --reset-env -- \
	    env HOME=$(CURDIR)/$(BUILD)/home PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
	    $(CTEST) -LE root | tee ctest.out || status=$$?; } ; \
	  chown -R $$(id -u):$$(id -g) $(CURDIR)/$(BUILD); [ $$status = 0 ] || exit $$status; $(CTEST_CHECK)

# Unit and integration tests under ASan+UBSan (clang, so clang's warnings count too).
test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang \
	  -DRAWDAX_SANITIZE=address,undefined -DRAWDAX_WERROR=$(WERROR) -DRAWDAX_BUILD_BENCHMARKS=OFF
	cmake --build $(ASAN_BUILD)
	cd $(ASAN_BUILD) && set -o pipefail && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  $(CTEST) | tee ctest.out && $(CTEST_CHECK)

# The concurrency and stress tests under TSan. die_after_fork=0: the control
# process tests fork the test binary, and the child's Client starts its reader
# thread (the child runs only that client, then exits). Each alternative of
# TSAN_TESTS must select a test: a renamed suite would otherwise drop out.
test-tsan: deps
	cmake -S . -B $(TSAN_BUILD) -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang \
	  -DRAWDAX_SANITIZE=thread -DRAWDAX_WERROR=$(WERROR) -DRAWDAX_BUILD_BENCHMARKS=OFF
	cmake --build $(TSAN_BUILD)
	cd $(TSAN_BUILD) && for p in $$(echo '$(TSAN_TESTS)' | tr '|' ' '); do \
	  n=$$(ctest -N -R "$$p" | sed -n 's/^Total Tests: *//p'); \
	  [ "$${n:-0}" -gt 0 ] || { echo "make test-tsan: '$$p' in TSAN_TESTS selects no test" >&2; exit 1; }; \
	done
	cd $(TSAN_BUILD) && set -o pipefail && \
	  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 die_after_fork=0" \
	  $(CTEST) -R '$(TSAN_TESTS)' | tee ctest.out && $(CTEST_CHECK)

# The device, engine, snapshot, region and crash suites under Debian 12's own
# kernel (6.1) in a QEMU guest with real device-dax, fsdax (ext4 -o dax),
# hugetlbfs and a disk, as root and as a plain user, then the power-cut checks
# (docs/guest.md). test-guest leaves the stress tests to the host stages;
# test-guest-full runs them too (outside CI: about three times as long).
test-guest: build
	tests/guest/ci_stage.sh $(BUILD)

test-guest-full: build
	tests/guest/ci_stage.sh $(BUILD) --full

# Power cuts of the guest while every region operation runs (create,
# destroy, resize, snapshot, incremental, restore, FUA/flush/persist writes),
# on ext4 over a directsync virtio disk and on carved devdax at once; each
# next boot checks the state against what was acknowledged
# (tests/guest/ops_powercut.sh; about 35 s a cut). Every cut interrupts every
# kind's loop, so POWERCUT_CUTS is the number of cuts per operation kind and
# media. Outside CI, whose guest stage runs three. POWERCUT_SEED replays.
POWERCUT_CUTS ?= 50
POWERCUT_SEED ?=
powercut: build
	tests/guest/ops_powercut.sh $(POWERCUT_CUTS) --tool $(BUILD)/tests/rawdax_powercut \
	  $(if $(POWERCUT_SEED),--seed $(POWERCUT_SEED))

# Does the power-cut test catch a lost fsync? Each fsync, fdatasync and
# directory fsync of the metadata path removed in turn, and cuts run on the
# mutant (tests/guest/mutation_check.sh; 10-25 minutes; docs/hardening.md).
mutation-check: build
	tests/guest/mutation_check.sh

# Power cuts while namespaces are created and destroyed on the guest's
# device-dax, CARVE_CUTS of them on one NVDIMM file, each checked by the next
# boot (tests/guest/carve_powercut.sh; about 25 s a cut). Outside CI, whose
# guest stage runs two. CARVE_SEED replays a run's operations and cut points.
CARVE_CUTS ?= 20
CARVE_SEED ?=
powercut-carve: build
	tests/guest/carve_powercut.sh $(CARVE_CUTS) --tool $(BUILD)/tests/rawdax_powercut \
	  $(if $(CARVE_SEED),--seed $(CARVE_SEED))

# Every libFuzzer target for FUZZ_SECONDS each, one after the other, from a
# copy of its committed seed corpus (new inputs stay in $(FUZZ_BUILD)/corpus;
# crashes, hangs and memory blow-ups fail the run, and so does a target that
# executed no input: its final stats say how many it ran).
fuzz: deps
	cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DRAWDAX_FUZZ=ON \
	  -DRAWDAX_WERROR=$(WERROR) -DRAWDAX_BUILD_TESTS=OFF -DRAWDAX_BUILD_BENCHMARKS=OFF
	cmake --build $(FUZZ_BUILD) --target $$(ls fuzz/corpus | sed 's/^/fuzz_/')
	for t in $$(ls fuzz/corpus); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$t && cp -n fuzz/corpus/$$t/* $(FUZZ_BUILD)/corpus/$$t/ && \
	  $(FUZZ_BUILD)/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $(FUZZ_FLAGS) \
	    -artifact_prefix=$(FUZZ_BUILD)/crash-$$t- $(FUZZ_BUILD)/corpus/$$t 2>&1 | \
	    tee $(FUZZ_BUILD)/fuzz-$$t.log | grep -E 'stat::number_of_executed_units|ERROR|SUMMARY|Done' ; \
	  test $${PIPESTATUS[0]} -eq 0 || exit 1; \
	  runs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $(FUZZ_BUILD)/fuzz-$$t.log | tail -n 1); \
	  [ "$${runs:-0}" -gt 0 ] || { echo "make fuzz: fuzz_$$t executed no input" >&2; exit 1; }; \
	done

# `rawdax serve` for SOAK_SECONDS under NBD I/O, namespace churn, freezes and
# snapshots; then RSS, fds, threads, the log and every byte are checked
# (docs/hardening.md).
soak: build
	cmake --build $(BUILD) --target rawdax_soak
	RAWDAX_SOAK_SECONDS=$(SOAK_SECONDS) $(BUILD)/tests/rawdax_soak

bench: build
	$(BUILD)/rawdax bench

# rawdax against nbdkit memory over NBD (fio, nbdcopy, qemu-img); see docs/export.md.
bench-nbd: build
	benchmarks/nbd_bench.sh --rawdax $(BUILD)/rawdax

# A VM guest's pause for a snapshot: QEMU background snapshot against the full pause (docs/vm.md).
bench-vm: build
	benchmarks/vm_snapshot_bench.py --rawdax $(BUILD)/rawdax

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(FUZZ_BUILD)
