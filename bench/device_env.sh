# Sourced by the bench/device_*.sh scripts on the device machine: strict mode, the repo on
# PYTHONPATH, $OUT, the carried wheels (.whl: Optuna, SQLAlchemy & co., which its image lacks)
# installed into /tmp/site, and what the run ran on.
#   . bench/device_env.sh /tmp/default_out
# Fill .whl (gitignored) on the workstation first; the device image has Python 3.12 and no network:
#   for p in optuna==5.1.0 sqlalchemy==2.1.9 alembic colorlog mako deap cmaes moocore cffi pycparser \
#            platformdirs greenlet; do python3 -m pip download --no-deps --only-binary=:all: \
#     --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$p"; done
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-$1}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,memory.used,clocks.sm --format=csv
python3 -c 'import torch, optuna, sqlalchemy; print("torch", torch.__version__, "optuna", optuna.__version__, "sqlalchemy", sqlalchemy.__version__)'
