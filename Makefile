# Set-up and the two jobs. `make demo` and `make test` each create .venv when absent and install
# the exact pins of constraints.txt; the install is skipped while .venv/.installed is newer than
# constraints.txt, setup.cfg and pyproject.toml.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian's Chromium for the study page's browser test, installed where root may (never fails)
APT := DEBIAN_FRONTEND=noninteractive apt-get install -y -q

.PHONY: demo test install bench clean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) constraints.txt setup.cfg pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,sentence,onnx,openvino,lancedb,clip,ray,umap,hf]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m embedkit.demo

test: $(STAMP)
	@command -v chromium >/dev/null || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
	  && { $(APT) chromium || { apt-get update -q && $(APT) chromium; }; }) \
	  || echo "chromium not installed: the browser test will skip"
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) demo-output
