#!/usr/bin/env bash
# Run the test suite (fast tests; add `-m slow` for the long statistical checks).
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
exec .venv/bin/python -m pytest -q "$@"
