# `make demo` and `make test` are the two entry points; both create .venv and install the project on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format regen-expected clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# tune first: the deployment policies the report's backends use are then measured on this machine (~15 s)
demo: $(STAMP)
	$(BIN)/mobilezoo tune
	$(BIN)/mobilezoo report --quick --out reports

lint: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/ruff format --check

test: lint
	$(BIN)/python -m pytest -n 2 -q

format: $(STAMP)
	$(BIN)/ruff check --fix
	$(BIN)/ruff format

# Seeded expected outputs guard the architectures; regenerate only after an intended architecture change.
regen-expected: $(STAMP)
	$(BIN)/python -m tests.models.regen_expected

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
