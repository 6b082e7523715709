# Two entry points (see README "Quick start"): `make run` and `make test`.
# Both run ci/setup.sh (missing Debian packages, the .venv with the pinned torch), configure, build, then run.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
CTEST_ARGS ?= -LE nightly
HARNESS := $(BUILD_DIR)/bin/moe-harness

.PHONY: all setup configure build test test-gpu run bench clean

all: build

setup:
	@bash ci/setup.sh

# Reconfigure only when there is no build tree yet; CMake re-runs itself when
# a CMakeLists.txt changes, which keeps a warm `make test` fast.
$(BUILD_DIR)/build.ninja: | setup
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

configure: setup $(BUILD_DIR)/build.ninja

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

# ctest runs twice as many tests as cores: most tests are multi-rank jobs
# that wait in collectives (ctest 6 min 35 s with -j4 vs 8 min 55 s with -j2
# on 2 cores, docs/measurements.md).
TEST_JOBS ?= $(shell echo $$(( 2 * $(JOBS) )))
test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(TEST_JOBS) $(CTEST_ARGS)

# The GPU tests (label multigpu) with ctest's GPU allocation
# (ci/gpu-resources.sh): every test holds one GPU per rank. Set
# MOE_HARNESS_REQUIRE_GPU=1 in GPU CI so a test that cannot run fails.
test-gpu: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) -L multigpu \
	  $$(bash $(CURDIR)/ci/gpu-resources.sh $(abspath $(BUILD_DIR))/ctest-gpus.json)

# The default suite: every case run not labelled nightly (nor needs-dp:
# waiting for a missing feature), reports in reports/latest/.
# Jobs: run's default, twice the cores (runs wait in collectives most of
# their time); RUN_JOBS=N overrides it.
RUN_ARGS ?= --exclude-label nightly --exclude-label needs-dp
RUN_JOBS ?=
run: build
	$(HARNESS) run cases/ $(RUN_ARGS) --report reports/latest $(if $(RUN_JOBS),--jobs $(RUN_JOBS))

bench: build
	$(BUILD_DIR)/bin/bench_comm
	$(BUILD_DIR)/bin/bench_checkpoint

clean:
	rm -rf $(BUILD_DIR)
