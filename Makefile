# Two commands for readers: `make lab` (set up, open the notebooks) and `make test` (set up, run
# every test and every notebook on a tiny offline model). The rest are helpers.
# The reader's environment: requirements.txt and the package, nothing else. `make lab` runs in it, and so does
# every lesson under `make test`, so a lesson needing a package only the tests install fails as for a reader.
VENV ?= .venv
# The tests and tools, layered on VENV (scripts/layer_venv.py): it sees VENV's packages, so torch is on disk once.
DEV_VENV ?= .venv-dev
PY := $(VENV)/bin/python
DEV_PY := $(DEV_VENV)/bin/python
# Versions known to pass (what CI installed when the suite last passed). `make test-latest` tries the newest
# releases the requirements allow instead; `make lock` refreshes this file from them once the suite passes.
CONSTRAINTS ?= constraints.txt
PIP := -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
# Lessons run in the kernel `molmo-reader`, VENV's Python, found through JUPYTER_PATH in DEV_VENV (so `make lab`
# does not list it beside VENV's own kernel).
NBVAL := --nbval-lax --nbval-kernel-name molmo-reader --nbval-sanitize-with tests/sanitize.cfg --nbval-cell-timeout 900

.PHONY: setup dev lab test test-latest lock tiny serve run-all gpu-check lint readme clean

# What a reader needs (requirements.txt, the package); `dev` adds the tests and tools beside it.
setup: $(VENV)/.installed
dev: $(DEV_VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) $(PIP) -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# An older layout installed the tools into VENV itself; that VENV is no longer what a reader has.
$(DEV_VENV)/.installed: $(VENV)/.installed requirements-dev.txt scripts/layer_venv.py
	@test ! -e $(VENV)/.dev-installed || { echo "$(VENV) holds the test tools (an older layout of this Makefile): \
	remove it (rm -rf $(VENV) .venv-reader) and run make again."; exit 1; }
	test -x $(DEV_PY) || python3 -m venv $(DEV_VENV)
	$(DEV_PY) scripts/layer_venv.py $(VENV)
	$(DEV_PY) -m pip install -q --upgrade pip
	$(DEV_PY) $(PIP) -r requirements-dev.txt
	JUPYTER_PATH=$(abspath $(DEV_VENV))/share/jupyter $(PY) -m ipykernel install --prefix $(DEV_VENV) \
		--name molmo-reader --display-name "Molmo2 (requirements.txt only)" >/dev/null
	touch $@

# `make lab MOLMO_MODEL_ID=tiny` (or run-all) uses the tiny offline model.
ifeq ($(MOLMO_MODEL_ID),tiny)
TINY_DIR := $(CURDIR)/downloaded_data/tiny-molmo2
override MOLMO_MODEL_ID := $(TINY_DIR)
export MOLMO_MODEL_ID
MODEL_DEPS := tiny
endif

# Jupyter refuses to start as root unless told; containers and Colab-like machines run as root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: setup $(MODEL_DEPS)
	$(VENV)/bin/jupyter lab $(ROOT_FLAG) notebooks

# One process per core (pytest-xdist; a notebook's cells stay in one worker), one thread each: the tiny
# model's tensors are too small for threads to pay, and several threaded workers would fight for the cores.
test: dev
	OMP_NUM_THREADS=1 JUPYTER_PATH=$(abspath $(DEV_VENV))/share/jupyter \
		$(DEV_PY) -m pytest tests notebooks -n auto --dist loadscope $(NBVAL)

# The same tests on the newest releases the requirements allow, in environments of their own.
test-latest:
	$(MAKE) test VENV=.venv-latest DEV_VENV=.venv-latest-dev CONSTRAINTS=

# Refresh constraints.txt: written only after the whole suite passed on the newest releases.
lock: test-latest
	.venv-latest-dev/bin/python scripts/write_constraints.py .venv-latest .venv-latest-dev --out constraints.txt

# `make serve` prints the plain `transformers serve ...` line for MOLMO_MODEL_ID (tiny too) and runs it, on
# 127.0.0.1 unless HOST says otherwise. PRECISION: auto (as load_model picks it), float32, bfloat16, float16, 8bit,
# 4bit; CONTINUOUS_BATCHING=1; VIDEO_FIX=1 lets Molmo2 be asked about videos (molmo_nb_utils/serving/molmo2_video.py).
HOST ?= 127.0.0.1
PORT ?= 8000
PRECISION ?= auto
CONTINUOUS_BATCHING ?= 0
VIDEO_FIX ?= 0
serve: setup $(MODEL_DEPS)
	$(PY) -m molmo_nb_utils.serving --model "$(MOLMO_MODEL_ID)" --host $(HOST) --port $(PORT) --precision $(PRECISION) \
		$(if $(filter 1,$(CONTINUOUS_BATCHING)),--continuous-batching) $(if $(filter 1,$(VIDEO_FIX)),--video-fix)

tiny: setup
	$(PY) -m molmo_nb_utils.tiny downloaded_data/tiny-molmo2

run-all: dev $(MODEL_DEPS)
	$(DEV_PY) scripts/run_all.py

# Measured GPU memory and speed on random weights of the real shapes (CPU fallback without a GPU).
gpu-check: setup
	$(PY) scripts/gpu_check.py

lint: dev
	$(DEV_VENV)/bin/ruff check molmo_nb_utils tests scripts notebooks conftest.py
	$(DEV_VENV)/bin/ruff format --check molmo_nb_utils tests scripts notebooks conftest.py

readme: setup
	$(PY) scripts/make_readme_table.py

clean:
	rm -rf downloaded_data/outputs downloaded_data/bench downloaded_data/tiny-molmo2
