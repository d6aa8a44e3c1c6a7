# rfcx: two commands do the whole set-up on a fresh machine.
#   make run   installs into .venv and runs the notebook series headless on the embedded synthetic data
#   make test  installs into .venv and runs the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rfcx-installed
PROFILE ?= mini
RUN_ID ?=
ARGS ?=
# test processes: the suite spends much of its time starting kernels, processes and TensorFlow,
# which two workers overlap on two cores (TEST_WORKERS=0: one process)
TEST_WORKERS ?= 2

export TF_CPP_MIN_LOG_LEVEL := 3
export KERAS_HOME := $(CURDIR)/.keras
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install run test test-fast lab screenshot bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,birdnet,beam]'
	$(BIN)/python -m ipykernel install --sys-prefix --name rfcx --display-name "Python (rfcx)" >/dev/null
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/rfcx run --profile $(PROFILE) $(if $(RUN_ID),--run-id $(RUN_ID)) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal -m "not slow" $(ARGS)

# JupyterLab on the notebooks with the project's kernel ("Python (rfcx)"); open the URL it prints.
lab: $(STAMP)
	$(BIN)/jupyter lab --no-browser --ip 127.0.0.1 --ServerApp.root_dir=notebooks $(if $(shell [ "$$(id -u)" = 0 ] && echo root),--allow-root)

# Pictures for the README: /lab in headless Chromium (the test keeps it) and the newest run's summary.
screenshot: $(STAMP)
	@command -v chromium >/dev/null || { echo "needs Chromium: apt-get install -y chromium"; exit 1; }
	RFCX_SCREENSHOT_DIR=docs/images $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_jupyterlab.py -k screenshot
	@latest=$$(ls -td outputs/*/ 2>/dev/null | head -1); \
	if [ -n "$$latest" ]; then $(BIN)/python -m rfcxlib.reports.summary "$$latest" --png docs/images/summary.png; \
	else echo "no run under outputs/ yet: make run first for docs/images/summary.png"; fi

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_features.py
	$(BIN)/python benchmarks/bench_models.py
	$(BIN)/python benchmarks/bench_embeddings.py

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
