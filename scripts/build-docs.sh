#!/usr/bin/env bash
# Build the documentation site (docs/conf.py: the guides in docs/*.md, the API
# reference from the docstrings, furo theme) into docs/_build/html, or into the
# folder given as $1. Sphinx warnings are errors, and every page is read again
# (-E), so a warning is never hidden by a cached page. Needs: pip install ".[docs]"
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/_build/html}"
python -m sphinx -W --keep-going -E -q -b html docs "$out"
echo "build-docs: $out/index.html"
