# sglbuild: `make image` builds the default image, `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TARGET ?=

.PHONY: image test test-unit test-engine test-full test-prepare clean-test-cache bench reliability host lock pipeline clean-images features-table

$(BIN)/sglbuild: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --isolated --quiet --index-url https://pypi.org/simple --upgrade pip
	$(BIN)/pip install --isolated --quiet --index-url https://pypi.org/simple -e '.[test]'
	touch $@

host:
	@ci/bootstrap-host.sh

## image: check the lock, fetch the wheelhouse, build + smoke-test + tag the default image
image: $(BIN)/sglbuild host
	$(BIN)/sglbuild lock --check $(TARGET)
	$(BIN)/sglbuild fetch $(TARGET)
	$(BIN)/sglbuild build $(TARGET)

## test: unit and integration tests against the real engine (everything but the heavy evidence of test-full): two
## pytest-xdist workers, each file on one worker, then the tests that act on the whole engine (gc, every image) alone;
## once both pass, the suite's cache keeps only what this run used
PYTEST   := $(BIN)/pytest -q --durations=15
PARALLEL := -n 2 --dist loadfile --no-loadscope-reorder
test: $(BIN)/sglbuild host
	since=$$(date +%s); $(PYTEST) $(PARALLEL) -m "not full and not exclusive"; a=$$?; $(PYTEST) -m "exclusive and not full"; b=$$?; \
	  [ $$a -eq 0 ] && [ $$b -eq 0 ] && $(BIN)/python tests/testcache.py prune $$since

## test-unit: what needs neither an engine nor the network (seconds; CI's pull-request job)
test-unit: $(BIN)/sglbuild
	$(PYTEST) -m "not engine and not network and not corpus and not full"

## test-engine: the integration tests that can differ between engines, again on a second engine (Docker 26.1.5 with
## buildx and containerd's image store, from Debian 13's packages, in a chroot in its own network namespace: ci/engine.sh)
ENGINE_TESTS := tests/test_build.py tests/test_repro.py tests/test_quoting.py tests/test_cache.py tests/test_verify.py tests/test_pipeline.py tests/test_engine_errors.py tests/test_family.py tests/test_toolchain.py
ENGINE_ENV    = env $$(ci/engine.sh env) SGLBUILD_TEST_REGISTRY_HOST=10.200.26.1
test-engine: $(BIN)/sglbuild host
	ci/engine.sh up containerd
	since=$$(date +%s); $(ENGINE_ENV) $(PYTEST) $(PARALLEL) -m "engine and not full and not exclusive" $(ENGINE_TESTS); a=$$?; \
	  $(ENGINE_ENV) $(PYTEST) -m "engine and exclusive and not full" $(ENGINE_TESTS); b=$$?; [ $$a -eq 0 ] && [ $$b -eq 0 ] && \
	  $(ENGINE_ENV) $(BIN)/python tests/testcache.py prune $$since

## test-full: everything, with the heavy evidence (whole builds from nothing, the bench's plain build), one at a time
test-full: $(BIN)/sglbuild host
	$(PYTEST)

## test-prepare: make what the suite keeps on disk (nvcc fixtures, uv, both test bases: arm64 under emulation), no engine
## needed; CI runs it beside 'make image'; 'make test' makes whatever is missing itself
test-prepare: $(BIN)/sglbuild
	$(BIN)/python tests/testcache.py prepare

## clean-test-cache: remove what the suite keeps between runs (test bases, small stages, nvcc fixtures, its downloads)
clean-test-cache: $(BIN)/sglbuild
	$(BIN)/python tests/testcache.py clean

## bench: sglbuild against the naive build of the same pins, and the reproducible build against a plain one (needs ~40 GB free disk)
bench: $(BIN)/sglbuild host
	$(BIN)/python bench/build_bench.py
	$(BIN)/python bench/repro_bench.py
	$(BIN)/python bench/archs_bench.py
	$(BIN)/python bench/targets_bench.py
	$(BIN)/python bench/platforms_bench.py
	$(BIN)/python bench/attest_bench.py
	$(BIN)/python bench/startup_bench.py
	$(BIN)/sglbuild build blackwell
	$(BIN)/python bench/aot_bench.py
	$(BIN)/python bench/aot_cross_bench.py

## reliability: fuzzing (hypothesis), kill -9 at random points of a build, faults (a changed byte, a tampered stage,
## a full disk, a registry and an engine stopped halfway): one table of figures (about 15 minutes; root for the tmpfs)
reliability: $(BIN)/sglbuild host
	$(BIN)/python bench/reliability.py

## pipeline: the CI image pipeline here: a job per platform (amd64 on this engine, arm64 on the second one,
## ci/engine.sh: emulated here, native on an arm64 runner), one loopback registry, then join, verify per platform, promote
PIPELINE_PORT ?= 5000
pipeline: $(BIN)/sglbuild host
	ci/engine.sh up containerd
	REGISTRY_HOST=0.0.0.0 ci/registry.sh $(PIPELINE_PORT) >/dev/null
	SGLBUILD=$(BIN)/sglbuild ENGINE_ARM64=$$(ci/engine.sh env | cut -d= -f2-) REPO_ARM64=10.200.26.1:$(PIPELINE_PORT)/sglang \
	  ci/pipeline.sh 127.0.0.1:$(PIPELINE_PORT)/sglang $(TARGET)

## lock: re-resolve the default target (network needed)
lock: $(BIN)/sglbuild
	$(BIN)/sglbuild lock $(TARGET)

## features-table: regenerate the feature table in docs/verify.md from the default image's evidence
features-table: $(BIN)/sglbuild
	$(BIN)/python ci/features_table.py

## clean-images: remove every image and container sglbuild made (by its labels and repositories)
clean-images:
	-/usr/bin/docker ps -aq --filter label=io.sglbuild.managed | xargs -r /usr/bin/docker rm -f
	-/usr/bin/docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '^sglbuild(-test)?/' | xargs -r /usr/bin/docker rmi -f
