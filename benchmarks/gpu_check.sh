#!/bin/sh
# The one command for the lent GPU machine (issue 11); see benchmarks/RESULTS.md, "GPU".
# Installs the wheels carried in .whl/ (ml-collections: the machine lacks it), then runs
# benchmarks/gpu_check.py into $OUT with Fashion-MNIST from tmp/fashion-mnist if carried.
# Extra arguments go to gpu_check.py (e.g. --parts=env,step_bf16 --budget=300).
cd "$(dirname "$0")/.." || exit 2
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 2
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
FMNIST=""
[ -d tmp/fashion-mnist ] && FMNIST="--fmnist_dir=tmp/fashion-mnist"
exec python3 benchmarks/gpu_check.py --platform=gpu --out="${OUT:-runs/gpu_check}" $FMNIST "$@"
