#!/usr/bin/env bash
# Build, check and time the CUDA rasterizer on the GPU machine in one call (issue 3).
#
#   device run, carry [".whl"] (gsplat's wheel from ../shared/device/wheels.sh render):
#   SPLATCAST_COMMIT=<sha> bash benchmarks/run_rasterizer_gpu.sh
#
# gsplat compiles its CUDA code on first use (~90 s), so it builds in the background while ours
# builds and the GPU tests run. Logs, the test summary and pytest-benchmark's JSON go to $OUT;
# a table of the figures is printed last.
set -uo pipefail
OUT=${OUT:-/tmp/splatcast-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
# splatcast itself: editable (its layer folders map into the package); where this setuptools cannot,
# link the layers into this throwaway copy's splatcast/ folder instead.
if ! python3 -m pip install -q --no-deps --no-build-isolation --no-compile -e . > "$OUT/install.log" 2>&1; then
    tail -3 "$OUT/install.log"
    for layer in engine kernels streaming export; do [ -e "splatcast/$layer" ] || ln -s "../$layer" "splatcast/$layer"; done
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 SPLATCAST_NO_COMPILE=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv | tee "$OUT/gpu.txt"

(time python3 -c "from gsplat.cuda._backend import _C; assert _C is not None, 'gsplat build failed'") > "$OUT/gsplat_build.log" 2>&1 &
gsplat_build=$!

start=$SECONDS
timeout 400 python3 -c "from splatcast.kernels.cuda_rasterizer import _load_extension; _load_extension()" 2>&1 | tail -40 | tee "$OUT/build.log" || exit 1
echo "splatcast kernels built in $((SECONDS - start)) s"

timeout 300 python3 -m pytest tests/test_cuda_rasterizer.py tests/test_colour.py -q -rs -p no:cacheprovider --junitxml="$OUT/tests.xml" 2>&1 | tee "$OUT/tests.log" | tail -30

wait $gsplat_build; tail -3 "$OUT/gsplat_build.log"
timeout 400 python3 -m pytest benchmarks/test_rasterizer_gpu.py -q -p no:cacheprovider --benchmark-json="$OUT/rasterizer.json" \
    --benchmark-columns=median,min,max --benchmark-sort=name 2>&1 | tail -25 | tee "$OUT/bench.log"

python3 - "$OUT/rasterizer.json" <<'EOF'
import json, sys
runs = json.load(open(sys.argv[1]))["benchmarks"]
rows = {}
for b in runs:
    e = b["extra_info"]
    if "gpu_median_ms" not in e:
        print(e)
        continue
    who = "gsplat" if e["renderer"].startswith("gsplat") else f"ours-{e['storage']}"
    rows.setdefault(e["case"], {})[f"{who}-{e['output']}"] = e["gpu_median_ms"]
    rows[e["case"]]["target"] = e["target_ms"]
cols = ["ours-fp16-rgb", "ours-fp32-rgb", "gsplat-rgb", "ours-fp16-i420", "gsplat-i420", "target"]
print(f"{'case':20}" + "".join(f"{c:>16}" for c in cols) + f"{'x gsplat':>10}")
for case, r in rows.items():
    ratio = r.get("gsplat-rgb", float("nan")) / r.get("ours-fp16-rgb", float("nan"))
    print(f"{case:20}" + "".join(f"{r.get(c, float('nan')):>16.3f}" for c in cols) + f"{ratio:>10.2f}")
EOF
