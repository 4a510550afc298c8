# Two commands: `make demo` trains SASRec on the synthetic data, exports it and queries the HTTP
# service on it; `make test` runs the tests.
# Both create .venv and install the project into it when needed (again when pyproject.toml or
# constraints.txt changes), with the exact versions of constraints.txt.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/shopformer-data check_batches=false
	@mkdir -p .cache
	$(VENV)/bin/shopformer-train | tee .cache/demo-train.out
	$(VENV)/bin/python -m shopformer.serve.demo run_output=.cache/demo-train.out

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks hydra_plugins

clean:
	rm -rf .cache outputs .pytest_cache
