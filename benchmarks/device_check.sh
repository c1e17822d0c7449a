#!/usr/bin/env bash
# The GPU checks in one go: the CUDA tests (tests/test_gpu.py: simulate on CUDA against the
# CPU, CUDA graphs against eager steps, float32 against float64, training and stacked
# training on CUDA), then the benchmarks: W1 on the 64x64 grid (float32 and float64, against
# torchdiffeq and torchode on the device), W2, W2n and W3 on the device, and V1 (ncsim's
# training loop with NC tracking against a plain DataLoader loop: MLP-5, ResNet-20, 8 stacked
# seeds). Run from the repository root:
#
#   bash benchmarks/device_check.sh [OUT_DIR]          # default OUT_DIR: $OUT or benchmarks/results
#
# Environment: PYTHON (default python3), DEVICE (default cuda), SIZE (default full; "tiny"
# for a dry run on the CPU: DEVICE=cpu SIZE=tiny), FASHION_MNIST (folder of the IDX files for
# V1; V1 is left out when the folder is missing), STAGES (default "tests w1 w2 v1": which
# stages to run), DEADLINE (seconds the whole script may take, e.g. 540 when one call of a
# device may last 10 minutes at most; each stage runs under `timeout` with its own cap, cut
# to what is left; default 0: no deadline). ncsim runs from the source tree (PYTHONPATH), so
# nothing needs installing where torch, scipy, sympy, pandas, pyarrow, click and matplotlib
# are present (pytest too for the tests stage); torchode is timed when it imports (it may
# travel as a wheel). Every stage's output goes to OUT_DIR/device_check.log as well. A stage
# that fails or runs out of time does not stop the others; the script exits 1 if any failed.
set -uo pipefail
out=${1:-${OUT:-benchmarks/results}}
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
size=${SIZE:-full}
stamp=$(date +%F)
kind=${device%%:*}
mkdir -p "$out"
logfile="$out/device_check.log"
deadline=${DEADLINE:-0}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

"$py" - "$device" <<'EOF' || exit 1
import sys, torch
device = torch.device(sys.argv[1])
if device.type == "cuda" and not torch.cuda.is_available():
    sys.exit("device_check: no CUDA device visible to torch")
print("torch", torch.__version__, "device", device,
      torch.cuda.get_device_name(device) if device.type == "cuda" else "")
EOF
skip=()
"$py" -c "import torchode" 2>/dev/null \
    || skip+=(--skip-peer torchode_dopri5 --skip-peer torchode_tsit5)
"$py" -c "import torchdiffeq" 2>/dev/null || skip+=(--skip-peer torchdiffeq_dopri5)

rc=0
# stage NAME CAP_S COMMAND...: run COMMAND under timeout (CAP_S, or what is left before the
# deadline if less), its output to the terminal and the log; a failure sets rc=1
stage() {
    local name=$1 cap=$2
    shift 2
    if (( deadline > 0 )); then
        local left=$(( deadline - SECONDS ))
        (( left < cap )) && cap=$left
    fi
    if (( cap < 10 )); then
        echo "device_check: no time left for stage $name" | tee -a "$logfile" >&2
        rc=1
        return
    fi
    echo "== $name (at ${SECONDS} s, limit ${cap} s)" | tee -a "$logfile"
    timeout "$cap" "$@" 2>&1 | tee -a "$logfile"
    local status=${PIPESTATUS[0]}
    if (( status != 0 )); then
        echo "device_check: stage $name exited $status (124: out of time)" | tee -a "$logfile"
        rc=1
    fi
}

stages=" ${STAGES:-tests w1 w2 v1} "
if [[ $stages == *" tests "* ]]; then
    stage tests 200 "$py" -m pytest -q -s -p no:cacheprovider tests/test_gpu.py
fi
if [[ $stages == *" w1 "* ]]; then
    stage w1 300 "$py" -m ncsim bench --device "$device" --size "$size" --workload W1 \
        --repeats 3 --peer-repeats 1 "${skip[@]}" --out "$out/${kind}_${stamp}_w1.json"
fi
if [[ $stages == *" w2 "* ]]; then
    stage w2 150 "$py" -m ncsim bench --device "$device" --size "$size" --workload W2 \
        --workload W2n --workload W3 --repeats 3 --out "$out/${kind}_${stamp}_w2_w3.json"
fi

root=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
if [[ $stages != *" v1 "* ]]; then
    :
elif [ -d "$root" ]; then
    stage v1 300 "$py" -m ncsim bench --device "$device" --size "$size" --workload V1 \
        --repeats 3 --data-root "$root" --out "$out/${kind}_${stamp}_v1.json"
else
    echo "device_check: no Fashion-MNIST folder at $root; V1 left out" | tee -a "$logfile" >&2
fi
exit $rc
