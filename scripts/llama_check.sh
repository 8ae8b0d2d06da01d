#!/usr/bin/env bash
# The llama.cpp cross-check of exported GGUF files: installs llama-cpp-python (pip builds llama.cpp from
# source, many minutes on 2 cores) and runs the tests marked `llama` (deselected where it is not installed).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet ".[test,lm,llama]"
python3 -m pytest -q -m llama tests/test_export.py
