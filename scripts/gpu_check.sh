#!/usr/bin/env bash
# GPU check: fine-tune lite0 end to end on the demo's JPEG shards with trainer=gpu_bf16 (bf16 mixed precision),
# report the train-step rate and the prepared loader's rate against it, score the trained model with
# `iqs predict`, and write the numbers to $OUT/gpu_check.json (see scripts/gpu_check.py for what is measured).
#
#   scripts/gpu_check.sh                      # make setup (pinned torch first, then the project), then the check
#   scripts/gpu_check.sh --cpu --quick        # the same steps on the CPU in tiny sizes: proves the script only
#   scripts/gpu_check.sh --no-setup --python python3   # an interpreter that already has the dependencies
#
# Options: --cpu, --quick, --no-setup, --python PY (default $PYTHON or python3.11); anything after `--` goes to
# scripts/gpu_check.py (--workers N, --epochs N, --batch N). OUT (default outputs/gpu_check/<UTC time>) gets the
# JSON and one log per step; GPU_CHECK_WORK (default a fresh temp folder) holds the demo, shards, runs.
set -euo pipefail
cd "$(dirname "$0")/.."

flags=()
setup=1
py="${PYTHON:-python3.11}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpu | --quick) flags+=("$1") ;;
    --no-setup) setup=0 ;;
    --python) py="$2"; shift ;;
    --) shift; flags+=("$@"); break ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

export NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1
if [[ $setup == 1 ]]; then
  # the project's own install: `make setup` pins torch/torchvision first, then installs .[dev] (needs PyPI)
  make setup PYTHON="$py"
  run=.venv/bin/python
else
  run="$py"
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  "$run" -c "import iqs.cli, hydra, mlflow, albumentations, simplejpeg, timm, pytorch_lightning" || {
    echo "gpu_check.sh: '$run' lacks the project's dependencies; drop --no-setup to run make setup" >&2
    exit 2
  }
fi

out="${OUT:-outputs/gpu_check/$(date -u +%Y%m%dT%H%M%SZ)}"
work="${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/iqs-gpu-check.XXXXXX")}"
mkdir -p "$out"
echo "gpu_check: results -> $out, work folder -> $work"
exec "$run" scripts/gpu_check.py --out "$out" --work "$work" "${flags[@]}"
