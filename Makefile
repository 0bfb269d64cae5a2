# The two commands a user needs: `make demo` and `make test`.
# Each creates or updates the project's own virtual environment (.venv) first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.txm-streamer-installed
DEMO_OUT ?= demo-output

.PHONY: venv demo test bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/txm-streamer demo --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache build *.egg-info
