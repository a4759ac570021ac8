# Rose Ash. The README's two commands:
#   make dev    run the whole platform with demo data (embedded PostgreSQL and Redis by default)
#   make test   run every test and static check
# Both install what they need: uv (into .tools/ if it is not on PATH), then the locked dependencies.

PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
# Compile dependencies to bytecode at install time: imports stay fast even where
# PYTHONDONTWRITEBYTECODE is set (it is on our CI machines).
export UV_COMPILE_BYTECODE := 1
RUN := $(UV) run --frozen

.PHONY: dev test install lint schema bench browser bench-fragments bench-activitypub

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv

install: $(UV)
	$(UV) sync --frozen

dev: install
	$(RUN) rose-ash dev

lint: install
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy shared
	$(RUN) lint-imports

# The browser tests drive Debian's Chromium (Playwright cannot download a browser here).
# As root on Debian it is installed when missing; elsewhere the tests say what to install.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the browser tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null; \
	fi

test: lint browser
	$(RUN) pytest

schema: install
	$(RUN) rose-ash schema dump

bench: install
	$(RUN) python -m bench.foundation

bench-fragments: install
	$(RUN) python -m bench.fragments

bench-activitypub: install
	$(RUN) python -m bench.activitypub
