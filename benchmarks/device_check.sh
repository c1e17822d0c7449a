#!/usr/bin/env bash
# The GPU benchmarks in one go: W1 on the 64x64 grid (float32 and float64, against torchdiffeq
# and torchode on the device), W2, W2n and W3 on the device, and V1 (ncsim's training loop with
# NC tracking against a plain DataLoader loop: MLP-5, ResNet-20, 8 stacked seeds). Not yet run
# on a GPU; estimated at about 10 minutes on an H200 (the peers' published GPU times add up to
# ~1 min for W1, run here with tsit5 too; ncsim runs W1 with dopri5, tsit5 and CUDA graphs in
# both dtypes; V1 ~2 min). Run from the repository root:
#
#   bash benchmarks/device_check.sh [OUT_DIR]          # default OUT_DIR: $OUT or benchmarks/results
#
# Environment: PYTHON (default python3), DEVICE (default cuda), SIZE (default full; "tiny"
# for a dry run on the CPU: DEVICE=cpu SIZE=tiny), FASHION_MNIST (folder of the IDX files for
# V1; V1 is left out when the folder is missing), STAGES (default "w1 w2 v1": which stages to
# run, e.g. STAGES=w1 alone when one call of a device may last 10 minutes at most). ncsim
# runs from the source tree (PYTHONPATH), so nothing needs installing where torch, scipy,
# sympy, pandas, pyarrow, click and matplotlib are present; torchode is timed when it imports
# (it may travel as a wheel). A stage that fails does not stop the others; the script exits 1
# if any failed.
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
"$py" -c "import torchode" 2>/dev/null \
    || skip+=(--skip-peer torchode_dopri5 --skip-peer torchode_tsit5)
"$py" -c "import torchdiffeq" 2>/dev/null || skip+=(--skip-peer torchdiffeq_dopri5)

rc=0
stages=" ${STAGES:-w1 w2 v1} "
if [[ $stages == *" w1 "* ]]; then
    "$py" -m ncsim bench --device "$device" --size "$size" --workload W1 --repeats 3 \
        --peer-repeats 1 "${skip[@]}" --out "$out/${kind}_${stamp}_w1.json" >/dev/null || rc=1
fi
if [[ $stages == *" w2 "* ]]; then
    "$py" -m ncsim bench --device "$device" --size "$size" --workload W2 --workload W2n \
        --workload W3 --repeats 3 --out "$out/${kind}_${stamp}_w2_w3.json" >/dev/null || rc=1
fi

root=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
if [[ $stages != *" v1 "* ]]; then
    :
elif [ -d "$root" ]; then
    "$py" -m ncsim bench --device "$device" --size "$size" --workload V1 --repeats 3 \
        --data-root "$root" --out "$out/${kind}_${stamp}_v1.json" >/dev/null || rc=1
else
    echo "device_check: no Fashion-MNIST folder at $root; V1 left out" >&2
fi
exit $rc
