#!/usr/bin/env bash
# The GPU benchmarks in one go: W1 on the 64x64 grid (float32 and float64, against torchdiffeq
# and torchode on the device), W2, W2n and W3 on the device, and V1 (ncsim's training loop with
# NC tracking against a plain DataLoader loop: MLP-5, ResNet-20, 8 stacked seeds). Estimated
# at under 10 minutes on an H200 (not yet run there: the peers' published GPU times add up to
# ~1 min for W1; V1 ~2 min). Run from the repository root:
#
#   bash benchmarks/device_check.sh [OUT_DIR]          # default OUT_DIR: $OUT or benchmarks/results
#
# Environment: PYTHON (default python3), DEVICE (default cuda), SIZE (default full; "tiny"
# for a dry run on the CPU: DEVICE=cpu SIZE=tiny), FASHION_MNIST (folder of the IDX files for
# V1; V1 is left out when the folder is missing). ncsim runs from the source tree
# (PYTHONPATH), so nothing needs installing where torch, scipy, sympy, pandas, pyarrow, click
# and matplotlib are present; torchode is timed when it imports (it may travel as a wheel).
# A stage that fails does not stop the others; the script exits 1 if any failed.
set -uo pipefail
out=${1:-${OUT:-benchmarks/results}}
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
size=${SIZE:-full}
stamp=$(date +%F)
kind=${device%%:*}
mkdir -p "$out"
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
"$py" -c "import torchode" 2>/dev/null || skip+=(--skip-peer torchode_dopri5 --skip-peer torchode_tsit5)
"$py" -c "import torchdiffeq" 2>/dev/null || skip+=(--skip-peer torchdiffeq_dopri5)

rc=0
"$py" -m ncsim bench --device "$device" --size "$size" --workload W1 --repeats 3 \
    --peer-repeats 1 "${skip[@]}" --out "$out/${kind}_${stamp}_w1.json" >/dev/null || rc=1
"$py" -m ncsim bench --device "$device" --size "$size" --workload W2 --workload W2n \
    --workload W3 --repeats 3 --out "$out/${kind}_${stamp}_w2_w3.json" >/dev/null || rc=1

root=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
if [ -d "$root" ]; then
    "$py" -m ncsim bench --device "$device" --size "$size" --workload V1 --repeats 3 \
        --data-root "$root" --out "$out/${kind}_${stamp}_v1.json" >/dev/null || rc=1
else
    echo "device_check: no Fashion-MNIST folder at $root; V1 left out" >&2
fi
exit $rc
