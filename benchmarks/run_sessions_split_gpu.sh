#!/usr/bin/env bash
# Concurrent 720p60 sessions with the server on SERVER_CPUS CPUs of its own and the viewers on the
# host's other CPUs (a server measured with its clients on other machines), beside the same
# sessions with server and viewers sharing the server's CPUs (the layout of the usual sweep).
#
#   device run, carry [".whl-stream"]:
#   (../shared/device/wheels.sh stream, then pyee==13.0.1 and cryptography==50.0.2 in place of the newer
#   ones it fetches: with pyee 16.1.0 and cryptography 51.0.1 the viewer processes exited before connecting)
#   SPLATCAST_COMMIT=<sha> bash benchmarks/run_sessions_split_gpu.sh
#
# SERVER_CPUS (default 16, which needs a host of 32 CPUs such as nvidia-h200-x2; 8 on a 16-CPU
# host measures half the scale), WORKERS (default SERVER_CPUS / 2) and SESSIONS (default
# "16 32"; each must be one of the sweep's counts); SHARED=0 leaves out the shared layout; with
# few viewer CPUs, SPLATCAST_SWEEP_VIEWER_SECONDS=50 gives the viewers time to start. The server's CPUs are whole cores (SMT
# siblings together), chosen by benchmarks/cpu_split.py.
set -uo pipefail
OUT=${OUT:-/tmp/splatcast-out}
SERVER_CPUS=${SERVER_CPUS:-16}
WORKERS=${WORKERS:-$((SERVER_CPUS / 2))}
SESSIONS=${SESSIONS:-16 32}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl-stream/*.whl || exit 1
for layer in engine kernels streaming export; do [ -e "splatcast/$layer" ] || ln -s "../$layer" "splatcast/$layer"; done
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
lscpu | grep -E "^(Model name|CPU\(s\)|Thread|Core|Socket|NUMA)" | tee "$OUT/run.log"
read -r server_cpus viewer_cpus < <(python3 benchmarks/cpu_split.py "$SERVER_CPUS") || exit 1
echo "server CPUs $server_cpus, viewer CPUs $viewer_cpus, $WORKERS workers, sessions $SESSIONS" | tee -a "$OUT/run.log"
timeout 300 python3 -c "from splatcast.kernels.cuda_rasterizer import _load_extension; _load_extension()" 2>&1 | tail -5 | tee -a "$OUT/run.log"
device=$(python3 -c "import torch; print(torch.cuda.get_device_name().split()[1].lower())")
selection=$(for n in $SESSIONS; do printf '%s' "${sep:-}$WORKERS-$n"; sep=" or "; done)
largest=${SESSIONS##* }
sweep() {  # name, viewer CPUs, pytest -k selection
    SPLATCAST_SWEEP_WORKERS=$WORKERS SPLATCAST_SWEEP_VIEWER_CPUS=$2 timeout 500 taskset -c "$server_cpus" \
        python3 -m pytest benchmarks/test_sessions_gpu.py -q -p no:cacheprovider -k "$3" \
        --benchmark-json="$OUT/sessions-$device-$1.json" 2>&1 | tail -4 | tee -a "$OUT/run.log"
}
[ "${SHARED:-1}" = 1 ] && sweep "shared-$SERVER_CPUS-cpus" "$server_cpus" "$WORKERS-$largest"
sweep "split-$SERVER_CPUS-cpus" "$viewer_cpus" "$selection"
python3 - "$OUT" <<'PY'
import json, sys, pathlib
for path in sorted(pathlib.Path(sys.argv[1]).glob("sessions-*.json")):
    for b in json.loads(path.read_text())["benchmarks"]:
        e = b["extra_info"]
        print(path.name, {k: e[k] for k in ("sessions", "workers", "server_cpus", "viewer_cpus", "server_fps_min", "server_fps_median", "viewer_fps_median", "server_pose_to_encoded_ms_p50_at_most", "server_pose_to_encoded_ms_p99_at_most", "encode_ms_p99_at_most", "render_ms_per_tick_mean", "server_cpu_cores_busy", "viewer_cpu_cores_busy")})
PY
