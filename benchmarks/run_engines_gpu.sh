#!/usr/bin/env bash
# GPU tests of the engines, then their benchmark, in one device call (issue 5).
#
#   device run, carry [".whl"] (diffusers from ../shared/device/wheels.sh recon), limit 480 s:
#   SPLATCAST_COMMIT=<sha> BUDGET_S=450 [BENCH_K='pytest -k expression'] bash benchmarks/run_engines_gpu.sh
#
# Figures go to $OUT/engines.json as they are measured (a run cut short keeps them); logs and
# pytest-benchmark's JSON beside it. Steps that would overrun BUDGET_S skip and say so.
set -uo pipefail
OUT=${OUT:-/tmp/splatcast-out}
mkdir -p "$OUT"
deadline=$(( $(date +%s) + ${BUDGET_S:-450} ))
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
for layer in engine kernels streaming export; do [ -e "splatcast/$layer" ] || ln -s "../$layer" "splatcast/$layer"; done
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv | tee "$OUT/gpu.txt"

timeout 120 python3 -X faulthandler -m pytest tests/test_export_gpu.py -q -rs -p no:cacheprovider > "$OUT/tests.log" 2>&1
tail -15 "$OUT/tests.log"

left=$(( deadline - $(date +%s) ))
SPLATCAST_ENGINES_JSON="$OUT/engines.json" SPLATCAST_DEADLINE=$deadline \
    timeout $(( left > 10 ? left - 5 : 5 )) python3 -X faulthandler -m pytest benchmarks/test_engines_gpu.py -q -rs -p no:cacheprovider -k "${BENCH_K:-}" \
    --benchmark-json="$OUT/engines-benchmark.json" --benchmark-columns=median,min,max > "$OUT/bench.log" 2>&1
tail -25 "$OUT/bench.log"
python3 - "$OUT/engines.json" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
print(data["device"], data["torch"])
for name, r in data["results"].items():
    print(f"{name:45} {r.get('median_ms', float('nan')):9.2f} ms  err {r.get('relative_error_vs_fp32', float('nan')):.2e}  "
          + " ".join(f"{k}={r[k]}" for k in ("deviation_vs_fp16_engine", "build_s", "cached_start_s", "compile_s") if k in r))
for name, why in data["not_run"].items():
    print(f"not run: {name}: {why}")
PY
