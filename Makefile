# sglbuild: `make image` builds the default image, `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TARGET ?=

.PHONY: image test test-engine bench reliability host lock pipeline clean-images readme-features

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

## test: unit tests and integration tests against the real engine
test: $(BIN)/sglbuild host
	$(BIN)/pytest -q

## test-engine: the integration tests again, against a second engine (Docker 26.1.5 with buildx and containerd's
## image store, from Debian 13's packages, in a chroot in its own network namespace: ci/engine.sh)
ENGINE_TESTS := tests/test_build.py tests/test_repro.py tests/test_quoting.py tests/test_cache.py tests/test_verify.py tests/test_pipeline.py tests/test_engine_errors.py tests/test_platforms.py tests/test_attest.py tests/test_toolchain.py
test-engine: $(BIN)/sglbuild host
	ci/engine.sh up containerd
	env $$(ci/engine.sh env) SGLBUILD_TEST_REGISTRY_HOST=10.200.26.1 $(BIN)/pytest -q -m engine $(ENGINE_TESTS)

## bench: sglbuild against the naive build of the same pins, and the reproducible build against a plain one (needs ~40 GB free disk)
bench: $(BIN)/sglbuild host
	$(BIN)/python bench/build_bench.py
	$(BIN)/python bench/repro_bench.py
	$(BIN)/python bench/archs_bench.py
	$(BIN)/python bench/targets_bench.py
	$(BIN)/python bench/platforms_bench.py
	$(BIN)/python bench/attest_bench.py

## reliability: fuzzing (hypothesis), kill -9 at random points of a build, faults (a changed byte, a tampered stage,
## a full disk, a registry and an engine stopped halfway): one table of figures (about 15 minutes; root for the tmpfs)
reliability: $(BIN)/sglbuild host
	$(BIN)/python bench/reliability.py

## pipeline: build -> verify -> push by digest -> pull -> verify -> tag, against REPO (e.g. 127.0.0.1:5000/sglang)
REPO ?= $(shell ci/registry.sh 5000)/sglang
pipeline: $(BIN)/sglbuild host
	SGLBUILD=$(BIN)/sglbuild ci/pipeline.sh $(REPO) $(TARGET)

## lock: re-resolve the default target (network needed)
lock: $(BIN)/sglbuild
	$(BIN)/sglbuild lock $(TARGET)

## readme-features: regenerate the README's feature table from the default image's evidence
readme-features: $(BIN)/sglbuild
	$(BIN)/python ci/readme_features.py

## clean-images: remove every image and container sglbuild made (by its labels and repositories)
clean-images:
	-/usr/bin/docker ps -aq --filter label=io.sglbuild.managed | xargs -r /usr/bin/docker rm -f
	-/usr/bin/docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '^sglbuild(-test)?/' | xargs -r /usr/bin/docker rmi -f
