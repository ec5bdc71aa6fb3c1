# The two commands the README promises. Both work on a CPU-only machine.
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: lab test test-browser deps test-deps

deps:
	$(PIP) install -r requirements.txt
	DS_BUILD_OPS=0 $(PIP) install --no-build-isolation "deepspeed>=0.15"

lab: deps
	# Token authentication stays on (Jupyter's default): open the URL with ?token= it prints.
	$(PYTHON) -m jupyter lab --ServerApp.root_dir=notebooks

test-deps: deps
	$(PIP) install -e ".[test]"

test: test-deps
	$(PYTHON) -m ruff check workbook tests
	WORKBOOK_PRESET=$${WORKBOOK_PRESET:-small} $(PYTHON) -m pytest
	$(MAKE) test-browser

# Every notebook in JupyterLab in Chromium (Run All, figures drawn, explorers respond, the HTML
# export offline). Needs Debian's chromium (apt-get install chromium); screenshots in
# artifacts/browser/.
test-browser: test-deps
	WORKBOOK_PRESET=$${WORKBOOK_PRESET:-small} $(PYTHON) -m pytest -m browser tests/browser -s
