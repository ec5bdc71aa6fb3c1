# The two commands the README promises. Both work on a CPU-only machine.
PYTHON ?= python3
PIP = $(PYTHON) -m pip
# JupyterLab's address. The default serves this machine only; on a remote GPU server keep it and
# tunnel (README, "On a GPU server"), or set HOST=0.0.0.0 behind your own firewall.
HOST ?= 127.0.0.1
PORT ?= 8888
# Installed once per environment: the stamps live inside it (sys.prefix) and are redone when
# requirements.txt or pyproject.toml change.
PREFIX := $(shell $(PYTHON) -c "import sys; print(sys.prefix)")
DEPS_STAMP := $(PREFIX)/.workbook-deps.stamp
TEST_STAMP := $(PREFIX)/.workbook-test-deps.stamp
# Root is the normal user in GPU cloud containers; Jupyter refuses it without --allow-root.
LAB_FLAGS := --ServerApp.ip=$(HOST) --ServerApp.port=$(PORT) --ServerApp.root_dir=notebooks \
	$(if $(DISPLAY),,--no-browser) $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: lab test test-browser deps test-deps strip

deps: $(DEPS_STAMP)

$(DEPS_STAMP): requirements.txt pyproject.toml
	$(PIP) install -r requirements.txt
	DS_BUILD_OPS=0 $(PIP) install --no-build-isolation "deepspeed>=0.15"
	touch $@

lab: deps
	# The tokenizer and base model, built once here with a progress bar, not inside a notebook
	# cell (a cold first run under load took longer than nbclient's cell timeout).
	$(PYTHON) -m workbook prepare
	# Token authentication stays on (Jupyter's default): open the URL with ?token= it prints.
	$(PYTHON) -m jupyter lab $(LAB_FLAGS)

test-deps: $(TEST_STAMP)

$(TEST_STAMP): $(DEPS_STAMP)
	$(PIP) install -e ".[test]"
	touch $@

test: test-deps
	$(PYTHON) -m ruff check workbook tests
	# The base model is trained here, once, not inside whichever test or notebook needs it first.
	$(PYTHON) -m workbook prepare --preset $${WORKBOOK_PRESET:-small}
	WORKBOOK_PRESET=$${WORKBOOK_PRESET:-small} $(PYTHON) -m pytest
	$(MAKE) test-browser

# Every notebook in JupyterLab in Chromium (Run All, figures drawn, explorers respond, the HTML
# export offline). Needs Debian's chromium (apt-get install chromium); screenshots in
# artifacts/browser/.
test-browser: test-deps
	WORKBOOK_PRESET=$${WORKBOOK_PRESET:-small} $(PYTHON) -m pytest -m browser tests/browser -s

# Running a notebook in JupyterLab saves its outputs; the notebooks are committed without them.
strip:
	$(PYTHON) -m jupyter nbconvert --clear-output --inplace notebooks/*.ipynb
