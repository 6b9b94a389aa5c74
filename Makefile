# The two commands: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install translations demo test lint bench extract-messages clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# .mo files are build output (a wheel build compiles them too, see hatch_build.py).
translations: $(STAMP)
	$(BIN)/pybabel compile --directory translations --domain messages

demo: translations
	$(BIN)/hub demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Spread the suite over the cores: every test process has its own SQLite files and embedded
# Redis, or (HUB_TEST_DATABASE_URL) its own PostgreSQL database beside the given one (test_gw0,
# test_gw1, ...) and Redis database (15, 14, ... of HUB_TEST_REDIS_URL's).
test: translations lint
	$(BIN)/pytest -n auto --maxprocesses 4

bench: translations
	$(BIN)/python -m bench.fanout
	$(BIN)/python -m bench.channels

# After changing user-facing strings: refresh the template and both catalogues.
extract-messages: $(STAMP)
	$(BIN)/pybabel extract --mapping-file babel.cfg --keywords _l --keywords lazy_gettext \
		--no-location --sort-output --output-file translations/messages.pot .
	$(BIN)/pybabel update --input-file translations/messages.pot --output-dir translations \
		--no-fuzzy-matching --ignore-obsolete

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache
