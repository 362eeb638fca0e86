#!/usr/bin/env bash
# Build, check and time the CUDA rasterizer on the GPU machine in one call (issue 3).
#
#   device run, carry [".whl"] (gsplat's wheel from ../shared/device/wheels.sh render):
#   SPLATCAST_COMMIT=<sha> bash benchmarks/run_rasterizer_gpu.sh
#
# gsplat compiles its CUDA code on first use (~90 s), so it builds in the background while ours
# builds and the GPU tests run (SKIP_GSPLAT=1 leaves it out). run.log, tests.log, pytest-benchmark's
# JSON, the stage profile and their summary (rasterizer-<device>.json, summarize_rasterizer.py)
# go to $OUT; the README table of the figures is printed last.
set -uo pipefail
OUT=${OUT:-/tmp/splatcast-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
# splatcast itself: editable (its layer folders map into the package); where this setuptools cannot,
# link the layers into this throwaway copy's splatcast/ folder instead.
if ! python3 -m pip install -q --no-deps --no-build-isolation --no-compile -e . > /tmp/install.log 2>&1; then
    tail -3 /tmp/install.log
    for layer in engine kernels streaming export; do [ -e "splatcast/$layer" ] || ln -s "../$layer" "splatcast/$layer"; done
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 SPLATCAST_NO_COMPILE=1
log="$OUT/run.log"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv | tee -a "$log"

gsplat_build=
if [ "${SKIP_GSPLAT:-0}" != 1 ]; then
    (time python3 -c "from gsplat.cuda._backend import _C; assert _C is not None, 'gsplat build failed'") > /tmp/gsplat_build.log 2>&1 &
    gsplat_build=$!
fi

start=$SECONDS
timeout 400 python3 -c "from splatcast.kernels.cuda_rasterizer import _load_extension; _load_extension()" 2>&1 | tail -40 | tee -a "$log" || exit 1
echo "splatcast kernels built in $((SECONDS - start)) s" | tee -a "$log"

timeout 300 python3 -X faulthandler -m pytest tests/test_cuda_rasterizer.py -q -rs -p no:cacheprovider > "$OUT/tests.log" 2>&1
grep -B2 -A14 "Fatal Python error" "$OUT/tests.log"; tail -30 "$OUT/tests.log"

[ -n "$gsplat_build" ] && { wait $gsplat_build; tail -3 /tmp/gsplat_build.log | tee -a "$log"; }
# Ours and gsplat's in separate processes: neither can take the other's figures down with it.
for who in splatcast $([ -n "$gsplat_build" ] && echo gsplat); do
    selection="test_gsplat"
    [ $who = splatcast ] && selection="test_splatcast$([ -n "$gsplat_build" ] && echo ' or test_agreement')"
    timeout 240 python3 -X faulthandler -m pytest benchmarks/test_rasterizer_gpu.py -k "$selection" -q \
        -p no:cacheprovider --benchmark-json="$OUT/rasterizer-$who.json" --benchmark-columns=median,min,max --benchmark-sort=name \
        > /tmp/bench-$who.log 2>&1
    cat /tmp/bench-$who.log >> "$log"
    grep -B2 -A14 "Fatal Python error" /tmp/bench-$who.log; tail -4 /tmp/bench-$who.log
done

timeout 200 python3 benchmarks/profile_rasterizer_gpu.py "$OUT/profile.json" 2>&1 | tee -a "$log"

device=$(python3 -c "import torch; print(torch.cuda.get_device_name().split()[1].lower())")
python3 benchmarks/summarize_rasterizer.py "$OUT" "$OUT/rasterizer-$device.json"
python3 benchmarks/plot_results.py "$OUT/rasterizer-$device.json"
