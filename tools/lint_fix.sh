#!/usr/bin/env bash
# Apply ruff's automatic fixes and formatting to the whole repository (config: pyproject.toml),
# then show what is left for a person to fix. Run once after merging the branches, from any folder:
#     tools/lint_fix.sh
# and commit the result on its own ("ruff --fix and ruff format"), so no review mixes it with logic.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m ruff check --fix . || true     # safe fixes only (import order, pyupgrade, ...)
python -m ruff format .
echo "--- left for a person (ruff check):"
python -m ruff check --output-format concise . || true
echo "--- left for a person (mypy jaxcnn):"
python -m mypy jaxcnn || true
