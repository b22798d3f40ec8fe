# Two commands on a fresh clone: `make train` and `make test`. Everything else is set up on the way.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install train test test-fast browser clean

install: $(STAMP)

$(STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	$(PY) -c "import samplernn.native as n; print(n.describe())"
	touch $(STAMP)

# The main job: build the built-in data, train the quick-start 3-tier model for a few
# minutes on the CPU, evaluate, write samples, and print where everything is.
train: install
	$(PY) scripts/train.py experiment=quickstart $(ARGS)

# Headless Chromium for the report's browser test (Debian's package; needs root and apt).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# SAMPLERNN_BROWSER=1 installs Chromium first; SAMPLERNN_REAL_DATA=1 switches on ../shared/data tests.
test: install
	if [ "$$SAMPLERNN_BROWSER" = 1 ]; then $(MAKE) browser; fi
	$(PY) -m pytest $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun wandb .pytest_cache
