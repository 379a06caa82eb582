#!/usr/bin/env bash
# The GPU rows of `make bench` and the CUDA tests, in one run, on a CUDA machine that has PyTorch
# (and numpy, opencv, scipy, safetensors, tokenizers) but not this package's venv or ROS: what
# the engine needs. ROS suites (node, cameras) are not run here.
#
#   bash tools/gpu_rows.sh [OUTDIR]          (default $OUT, else /tmp/seg_ros_gpu)
#
# A `.whl/` folder in the repository root, if present, is installed first (no index, no deps):
# put transformers==5.23.0 there when the machine has another release, e.g.
#   python -m pip download --no-deps --only-binary=:all: transformers==5.23.0 -d .whl
# Each step has its own time limit, so one slow suite cannot eat the others' time; every
# step's output is kept in OUTDIR (JSON-lines rows, pytest's summary).
set -u
out=${1:-${OUT:-/tmp/seg_ros_gpu}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/seg_ros_site .whl/*.whl && export PYTHONPATH=/tmp/seg_ros_site:$PWD
fi
{ nvidia-smi -L; python3 -c "import torch, transformers; print('torch', torch.__version__,
  'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)"; } \
  2>&1 | tee "$out/machine.txt"
step() {  # step NAME SECONDS COMMAND...: run it, rows / output to OUTDIR/NAME.txt
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" > "$out/$name.txt" 2>&1
  echo "   rc $? $(wc -l < "$out/$name.txt") lines"
  tail -3 "$out/$name.txt"
}
step cuda_tests 150 python3 -m pytest -q -p no:cacheprovider -m "gpu and not graph" \
  test/test_sam2.py test/test_sam3.py test/test_references_sam.py test/test_streams.py
step bench_sam2 200 python3 -m seg_ros.bench --only sam2,streams
step bench_concepts 150 python3 -m seg_ros.bench --only concepts --quick
