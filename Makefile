# The two commands a newcomer needs: `make run` (set up and run Punctual), `make test` (run the tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test setup bench compare clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -qq --upgrade pip

# Running needs requirements.txt only; the test tools (Playwright, schemathesis, the Kafka broker) come with
# `make test`. -qq: pip says nothing unless something fails.
$(VENV)/.installed-run: requirements.txt | $(BIN)/python
	$(BIN)/pip install -qq -r requirements.txt
	touch $@

$(VENV)/.installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -qq -r requirements-dev.txt
	touch $@ $(VENV)/.installed-run

setup: $(VENV)/.installed

run: $(VENV)/.installed-run
	$(BIN)/python app.py

# TEST_DATABASE_URL (or DATABASE_URL) picks a PostgreSQL server; without either the tests start an embedded one
# (one per worker). The suite runs in PYTEST_WORKERS processes (pytest-xdist; 0 runs it in this one): the tests
# mostly wait on app processes, sockets and PostgreSQL, so 4 workers beat 2 on 2 cores. worksteal: an idle
# worker takes tests queued on a busy one, so the long fault tests do not leave a worker running alone at the end.
PYTEST_WORKERS ?= 4
test: setup
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/run.py

# Durable workflows (issue 13): steps per second, step-to-step overhead, 10,000 waiting workflows' memory; about 4 minutes.
bench-workflows: setup
	$(BIN)/python bench/workflows.py

# Punctual vs PgQueuer and Procrastinate in one run (peers go into bench/.venv-peers); about 15 minutes.
compare: setup
	$(BIN)/python bench/compare.py

clean:
	rm -rf $(VENV) data .pytest_cache
