# Two commands on a fresh clone: `make train` and `make test`. Everything else is set up on the way.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP := $(PY) -m pip install -q --disable-pip-version-check
# torch: auto (the CPU build where there is no NVIDIA GPU), cpu, or cuda (the default wheel)
TORCH ?= auto
TORCH_PIN := $(shell grep -E '^torch(audio)?==' requirements.txt | cut -d' ' -f1 | tr '\n' ' ')
CPU_INDEX := https://download.pytorch.org/whl/cpu

.PHONY: install train test browser clean

install: $(STAMP)

$(STAMP): requirements.txt setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if [ "$(TORCH)" = cpu ] || { [ "$(TORCH)" = auto ] && ! command -v nvidia-smi >/dev/null \
	    && [ ! -e /proc/driver/nvidia ]; }; then \
	  if $(PY) -c "import urllib.request; urllib.request.urlopen('$(CPU_INDEX)/', timeout=10)" \
	      2>/dev/null; then \
	    echo "no NVIDIA GPU (or TORCH=cpu): torch's CPU build from $(CPU_INDEX)"; \
	    $(PIP) --index-url $(CPU_INDEX) $(TORCH_PIN) || echo "$(CPU_INDEX) does not serve" \
	      "$(TORCH_PIN): torch from the default index (on Linux its CUDA build)"; \
	  else \
	    echo "$(CPU_INDEX) cannot be reached: torch from the default index (on Linux its CUDA build)"; \
	  fi; \
	fi
	$(PIP) -r requirements.txt
	$(PIP) --no-deps -e .
	$(PY) -c "import samplernn.native as n; print(n.describe())"
	touch $(STAMP)

# The main job: build the built-in data, train the quick-start 3-tier model for a few
# minutes on the CPU, evaluate, write samples, and print where everything is.
train: install
	$(PY) scripts/train.py experiment=quickstart $(ARGS)

# Headless Chromium for the report's browser test (Debian's package; needs root and apt).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# SAMPLERNN_BROWSER=1 installs Chromium first; SAMPLERNN_REAL_DATA=1 switches on ../shared/data
# tests, SAMPLERNN_SLOW=1 the slow layer (real processes, signals, Triton's interpreter).
test: install
	if [ "$$SAMPLERNN_BROWSER" = 1 ]; then $(MAKE) browser; fi
	$(PY) -m pytest $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun wandb .pytest_cache
