#!/usr/bin/env bash
# Latency and session-sweep benchmarks on the GPU machine in one call (issue: real-time at scale).
#
#   device run, carry [".whl-stream"] (av, aiortc, aiohttp ... for Python 3.12):
#   (../shared/device/wheels.sh stream, then pyee==13.0.1 and cryptography==50.0.2 in place of the newer
#   ones it fetches: with pyee 16.1.0 and cryptography 51.0.1 the viewer processes exited before connecting)
#   bash benchmarks/run_streaming_gpu.sh
#
# The session sweep runs with one server process and sharded over min(cores / 2, 8) workers
# (SPLATCAST_SWEEP_WORKERS=1,8 to choose). Writes pytest-benchmark JSON for both suites, their plots and the logs to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/splatcast-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl-stream/*.whl || exit 1
if ! python3 -m pip install -q --no-deps --no-build-isolation --no-compile -e . > /tmp/install.log 2>&1; then
    for layer in engine kernels streaming export; do [ -e "splatcast/$layer" ] || ln -s "../$layer" "splatcast/$layer"; done
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
nvidia-smi --query-gpu=name,driver_version --format=csv | tee "$OUT/run.log"
start=$SECONDS
timeout 300 python3 -c "from splatcast.kernels.cuda_rasterizer import _load_extension; _load_extension()" 2>&1 | tail -5 | tee -a "$OUT/run.log"
echo "kernels built in $((SECONDS - start)) s" | tee -a "$OUT/run.log"
device=$(python3 -c "import torch; print(torch.cuda.get_device_name().split()[1].lower())")
timeout 200 python3 -m pytest benchmarks/test_latency_gpu.py -q -p no:cacheprovider --benchmark-json="$OUT/latency-$device.json" 2>&1 | tail -15 | tee -a "$OUT/run.log"
timeout ${SWEEP_TIMEOUT:-300} python3 -m pytest benchmarks/test_sessions_gpu.py -q -p no:cacheprovider -x --benchmark-json="$OUT/sessions-$device.json" 2>&1 | tail -15 | tee -a "$OUT/run.log"
for results in "$OUT/latency-$device.json" "$OUT/sessions-$device.json"; do
    [ -f "$results" ] && python3 benchmarks/plot_results.py "$results"
done
python3 - "$OUT" <<'PY'
import json, sys, pathlib
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    for b in json.loads(path.read_text())["benchmarks"]:
        e = b["extra_info"]
        keep = {k: (v["p50"], v["p99"]) if isinstance(v, dict) else v for k, v in e.items() if k in ("total_ms", "render_ms", "encode_ms", "latency_ms_p50", "latency_ms_p99", "release", "sessions", "workers", "server_fps_min", "server_fps_median", "viewer_fps_median", "server_pose_to_encoded_ms_p50_at_most", "server_pose_to_encoded_ms_p99_at_most", "encode_ms_p99_at_most", "render_ms_per_tick_mean", "server_cpu_cores_busy")}
        print(b["name"], keep)
PY
