#!/usr/bin/env bash
# Time the learned reconstruction's networks on the GPU machine in one call (issue 4).
#
#   device run, carry [".whl"] (diffusers and transformers with their pure-Python needs, from
#   ../shared/device/wheels.sh recon plus the ones named in this session's report):
#   SPLATCAST_COMMIT=<sha> [BENCH_K='pytest -k expression'] [TEST_TIMEOUT=420] bash benchmarks/run_recon_gpu.sh
#
# The end-to-end run with the torch engine compiles the UNet step first (about 260 s on the H200):
# give it its own call, BENCH_K=end_to_end TEST_TIMEOUT=540.
#
# pytest-benchmark's JSON and the log go to $OUT; a table of the figures is printed last.
set -uo pipefail
OUT=${OUT:-/tmp/splatcast-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
for layer in engine kernels streaming export; do [ -e "splatcast/$layer" ] || ln -s "../$layer" "splatcast/$layer"; done
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv | tee "$OUT/run.log"
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)" 2>&1 | tee -a "$OUT/run.log"
timeout ${TEST_TIMEOUT:-420} python3 -X faulthandler -m pytest benchmarks/test_recon_gpu.py -q -p no:cacheprovider -k "${BENCH_K:-}" \
    --benchmark-json="$OUT/recon.json" --benchmark-columns=median,min,max --benchmark-sort=name 2>&1 | tee -a "$OUT/run.log" | tail -25
python3 - "$OUT/recon.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
print(report["machine_info"].get("device"), report["datetime"])
for b in report["benchmarks"]:
    e = b["extra_info"]
    print(f"{e['stage']:22} {e.get('engine', ''):6} median {b['stats']['median'] * 1000:10.1f} ms   peak {e['peak_gpu_memory_gib']:6.2f} GiB"
          f"   {e.get('stage_seconds', '')} {e.get('first_run_with_engine_builds_s', '')}")
PY
