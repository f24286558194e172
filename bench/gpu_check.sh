#!/usr/bin/env bash
# The NVML source on a machine with an NVIDIA GPU (issue 5, items 3 and 6), in one run:
#   1. `nvidia-smi -q` (a fresh real capture, for tests/data/nvml/ if it shows more than ours);
#   2. `rackwatch probe --nvml --output line-protocol` and, right after it,
#      `nvidia-smi --query-gpu=<bench.gpu_compare.QUERY> --format=csv`;
#   3. bench.gpu_compare on the two: identity equal; memory, clocks, temperature, power within
#      tolerances (exit status 1 if not);
#   4. the XID event listener started and stopped (registration on the real driver);
#   5. bench/bench_nvml.py, 3 runs: the agent's poll per GPU against the raw NVML calls and
#      nvidia-smi, and each NVML call of a first poll with its answer and cost (nvml-calls.json);
#      the poll with the profiling counters against the usual one (issue 18 item 2), and the
#      profiling calls' answers and cost on an idle GPU (nvml-profiling.json: MIG mode, GPM
#      support, nvmlGpmSampleGet, GPM metrics 1 s apart with each metric's own return code,
#      encoder/decoder use, NVLink byte counters);
#   6. steps 2-3 again while PyTorch multiplies matrices on GPU 0 (readings that move; reported,
#      not judged), and the profiling calls' answers under that load (nvml-profiling-load.json).
# Results under $OUT (or ./gpu-check-out): log.txt (every step's output), nvidia-smi-q.txt,
# probe.lp, nvidia-smi.csv, bench.json, nvml-calls.json, nvml-profiling.json, probe-load.lp,
# nvidia-smi-load.csv, nvml-profiling-load.json. The two profiling captures are what
# tests/data/nvml/ needs before tests/nvml_fake.py may answer GPM with values.
# Takes about a minute.
#
# Python: .whl/ present -> those wheels into /tmp/site on top of the machine's python3 (for a GPU
# machine that reaches no package index; make them here first with `bash bench/gpu_check.sh
# --wheels` and carry .whl); else .venv if it has what rackwatch needs; else a new virtual
# environment in /tmp with `pip install -e .`.
set -uo pipefail
cd "$(dirname "$0")/.."

# What `rackwatch probe --nvml` imports beyond an image that has nvidia-ml-py and PyYAML.
WHEELS=(pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
    typing-extensions==4.16.0)

if [ "${1:-}" = --wheels ]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
    exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}" nvidia-ml-py==13.615.71
fi

OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
LOG=$OUT/log.txt
: >"$LOG"
say() { echo "== $*" | tee -a "$LOG"; }

if [ -d .whl ]; then
    say "python3 with the carried wheels"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl >>"$LOG" 2>&1 || { say "wheels did not install"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
    PY=python3
elif .venv/bin/python -c 'import pynvml, pydantic, yaml, rackwatch' 2>/dev/null; then
    PY=.venv/bin/python
else
    say "new virtual environment in /tmp/rackwatch-venv"
    python3 -m venv /tmp/rackwatch-venv &&
        /tmp/rackwatch-venv/bin/pip install -q -e . >>"$LOG" 2>&1 ||
        { say "pip install -e . failed (no package index? see --wheels)"; exit 1; }
    PY=/tmp/rackwatch-venv/bin/python
fi
export PYTHONUNBUFFERED=1
say "$($PY --version), nvidia-ml-py $($PY -c 'import importlib.metadata as m; print(m.version("nvidia-ml-py"))' 2>&1)"
nvidia-smi -L 2>&1 | tee -a "$LOG"

nvidia-smi -q >"$OUT/nvidia-smi-q.txt" 2>>"$LOG"

say "rackwatch probe --nvml, then nvidia-smi --query-gpu"
QUERY=$($PY -c 'from bench.gpu_compare import QUERY; print(",".join(QUERY))')
$PY -m rackwatch probe --nvml --output line-protocol >"$OUT/probe.lp" 2>>"$LOG"
probe=$?
nvidia-smi --query-gpu="$QUERY" --format=csv >"$OUT/nvidia-smi.csv" 2>>"$LOG"
head -c 3000 "$OUT/probe.lp" | tee -a "$LOG"
cat "$OUT/nvidia-smi.csv" | tee -a "$LOG"

say "comparison"
$PY -m bench.gpu_compare "$OUT/probe.lp" "$OUT/nvidia-smi.csv" 2>&1 | tee -a "$LOG"
compared=${PIPESTATUS[0]}

say "XID event listener: start, 2 s, stop"
$PY - >>"$LOG" 2>&1 <<'EOF'
import asyncio, logging
from agent.accelerators.nvml_events import NvmlEvents

logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

async def main() -> None:
    events = NvmlEvents({"host": "gpu-check"}, lambda samples: print(samples))
    events.start()
    await asyncio.sleep(2)
    await events.stop()
    print(f"events received: {events.events}")

asyncio.run(main())
EOF
tail -3 "$LOG"

benched=0
for run in 1 2 3; do
    say "bench_nvml, run $run of 3"
    calls=()
    [ $run = 1 ] && calls=(--calls "$OUT/nvml-calls.json" --profiling "$OUT/nvml-profiling.json")
    $PY bench/bench_nvml.py --json "/tmp/bench-$run.json" "${calls[@]}" 2>&1 | tee -a "$LOG"
    [ "${PIPESTATUS[0]}" = 0 ] || benched=1
done
$PY -c 'import json, sys; print(json.dumps([json.load(open(f)) for f in sys.argv[1:]], indent=1))' \
    /tmp/bench-[123].json >"$OUT/bench.json"

say "under load: PyTorch bf16 matrix products on GPU 0 for 15 s, probe and nvidia-smi at 6 s"
env -u PYTHONPATH python3 - >>"$LOG" 2>&1 <<'EOF' &
import time
import torch

a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
started = time.time()
while time.time() - started < 15:
    a @ a
    torch.cuda.synchronize()
print("load done")
EOF
load=$!
sleep 6
$PY -m rackwatch probe --nvml --output line-protocol >"$OUT/probe-load.lp" 2>>"$LOG"
nvidia-smi --query-gpu="$QUERY" --format=csv >"$OUT/nvidia-smi-load.csv" 2>>"$LOG"
tr ' ,' '\n\n' <"$OUT/probe-load.lp" | grep -E '^(util_pct|power_w|sm_clock_mhz|temp_c|throttle_[a-z_]*)=' | tee -a "$LOG"
tee -a "$LOG" <"$OUT/nvidia-smi-load.csv"
say "profiling calls under load (GPM metrics 1 s apart, encoder/decoder, NVLink bytes)"
$PY - "$OUT/nvml-profiling-load.json" 2>&1 <<'EOF' | tee -a "$LOG"
import json
import sys

import pynvml

from bench.bench_nvml import profiling_answers

pynvml.nvmlInit()
answers = profiling_answers(pynvml, pynvml.nvmlDeviceGetCount())
pynvml.nvmlShutdown()
with open(sys.argv[1], "w", encoding="utf-8") as out:
    out.write(json.dumps(answers, indent=1) + "\n")
for entry in answers:
    if entry["call"] != "nvmlDeviceGetFieldValues":
        print(entry["call"], entry["args"][0], entry.get("answer", entry.get("error")))
EOF
$PY -m bench.gpu_compare "$OUT/probe-load.lp" "$OUT/nvidia-smi-load.csv" 2>&1 | tee -a "$LOG"
wait $load

say "probe exit $probe, comparison exit $compared, bench exit $benched"
[ "$probe" = 0 ] && [ "$compared" = 0 ] && [ "$benched" = 0 ]
