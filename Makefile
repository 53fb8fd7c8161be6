# What people type. CMake does the building; this file names the jobs.
#
#   make demo    install what is missing, build, run the whole system on loopback
#   make check   install, build with ASan+UBSan and -Werror, run every test
#   make bench   build optimised, run the benchmarks
#   make fuzz    run every fuzz target for FUZZ_SECONDS each
#   make format  apply .clang-format to the tree

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECONDS ?= 60
CHECK_DIR := build/check
REL_DIR := build/release
FUZZ_DIR := build/fuzz

.PHONY: all deps build demo check bench fuzz format clean

all: build

deps:
	@sh scripts/deps.sh

$(REL_DIR)/CMakeCache.txt:
	cmake -S . -B $(REL_DIR) -DCMAKE_BUILD_TYPE=Release

build: deps $(REL_DIR)/CMakeCache.txt
	cmake --build $(REL_DIR) -j$(JOBS)

demo: build
	$(REL_DIR)/src/proxkey demo

# The micro suites, then the system benchmarks (real daemons on loopback, the
# simulator at 100,000 devices). docs/benchmarks.md records the results.
bench: build
	$(REL_DIR)/src/proxkey bench
	$(REL_DIR)/src/proxkey bench gts
	$(REL_DIR)/src/proxkey bench reg
	$(REL_DIR)/src/proxkey bench alloc
	$(REL_DIR)/src/proxkey bench sim

$(CHECK_DIR)/CMakeCache.txt:
	CC=clang cmake -S . -B $(CHECK_DIR) -DCMAKE_BUILD_TYPE=Debug \
	  -DPK_SANITIZE=ON -DPK_FUZZ=ON -DPK_WERROR=ON

check: deps $(CHECK_DIR)/CMakeCache.txt
	cmake --build $(CHECK_DIR) -j$(JOBS)
	cd $(CHECK_DIR) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j$(JOBS)

fuzz: deps
	CC=clang cmake -S . -B $(FUZZ_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DPK_SANITIZE=ON -DPK_FUZZ=ON -DPK_FUZZ_SMOKE_SECONDS=$(FUZZ_SECONDS)
	cmake --build $(FUZZ_DIR) -j$(JOBS)
	cd $(FUZZ_DIR) && ctest -L fuzz --output-on-failure

format:
	find lib src tests bench fuzz -name '*.[ch]' | xargs clang-format -i

clean:
	rm -rf build
