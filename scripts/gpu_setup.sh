# Sourced by the scripts/gpu_*.sh scripts: $OUT made, $PY chosen, the wheels of .whl/ (where the machine
# lacks some dependencies; scripts/gpu_wheels.sh downloads them) installed into /tmp/site, the package
# importable from the working tree.
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
