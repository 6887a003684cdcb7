# Browser tests of the dashboard (tests/ui): Debian's chromium and the playwright package.
#
# Playwright drives the system Chromium through its executable path; `playwright install` is
# never run, so no browser build is downloaded. playwright is in the `test` extra too; the pip
# line below covers a venv made before it was added there.

CHROMIUM ?= /usr/bin/chromium
# apt-get needs root: CI and the dev machines run as root, a laptop goes through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

TEST_PREREQS += ui-browser

.PHONY: ui-browser

ui-browser: | $(VENV)/.installed ## headless Chromium (apt) and playwright (pip) for tests/ui
	@test -x $(CHROMIUM) || { \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium; }
	@$(PY) -c 'import playwright.async_api' 2>/dev/null \
		|| $(PY) -m pip install -q 'playwright>=1.40,<2'
