#!/usr/bin/env bash
# The GPU check of fused training (docs/training.md, "Fused training"), as one prepared script.
#
#   bash bench/gpu_check.sh fetch          # here, where pip reaches the registry: the cp312 wheels the
#                                          # device machine lacks, into .whl/ (ignored by git)
#   bash bench/gpu_check.sh run OUT        # there, from the copied tree: installs .whl/ if present,
#                                          # then the benches, each under its own time limit; every
#                                          # table goes to OUT/ as it is printed
#   DEVICE=cpu QUICK=1 bash bench/gpu_check.sh run /tmp/gpu-check   # the same steps, small, on a CPU
#
# With the device tool: run(command="bash bench/gpu_check.sh run $OUT", carry=[".whl"], timeout_s=480).
# Each step has its own time limit (90, 180 and 150 s; STEP_S sets one for all), so a slow step
# costs its own table, not the rest: at most about 7 minutes in all.
set -uo pipefail

cd "$(dirname "$0")/.."
# what the project needs and the device machine's image lacks (the device tool's KINDS.md)
WHEELS=(lark pydantic pydantic-core annotated-types typing-inspection python-levenshtein levenshtein
        rapidfuzz mnist1d)

fetch() {  # the versions installed here, so that pydantic and pydantic-core match
    mkdir -p .whl
    local pins
    pins=$(python3 -c 'import sys
from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in sys.argv[1:]))' "${WHEELS[@]}") || exit 2
    # shellcheck disable=SC2086
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl $pins || exit 2
    ls -l .whl
}

step() {  # step NAME SECONDS COMMAND...: one bench under a time limit, its table in $OUT/NAME.txt
    local name=$1 limit=${STEP_S:-$2}
    shift 2
    echo "== $name (at most $limit s): $*"
    local start=$SECONDS
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" = 0 ] || FAILED="$FAILED $name"
}

run() {
    OUT=${1:?usage: bash bench/gpu_check.sh run OUT}
    mkdir -p "$OUT"
    if python3 -c "import lark, pydantic, Levenshtein, rapidfuzz, mnist1d" 2>/dev/null; then
        export PYTHONPATH=$PWD  # all there already (a rehearsal here)
    elif compgen -G ".whl/*.whl" >/dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl || exit 2
        export PYTHONPATH=/tmp/site:$PWD
    else
        export PYTHONPATH=$PWD
    fi
    export PYTHONUNBUFFERED=1
    local dev=${DEVICE:-cuda}
    {
        date -u
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
        python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    } 2>&1 | tee "$OUT/card.txt"
    if [ "${QUICK:-0}" = 1 ]; then  # the same steps, small: a rehearsal of the script
        local size=(--train-size 256) specs=(examples/mnist1d.mnet) members=5 runs=(--train-size 400 --test-size 200)
    else
        local size=() specs=(examples/mnist1d.mnet examples/v5-1d.mnet examples/v5.mnet) members=5,25,100
        local runs=(--train-size 10000 --test-size 2000)
    fi
    FAILED=""
    step specs 90 python3 bench/fused.py --device "$dev" --specs "${specs[@]}" --repeats 3 --threads 1 \
        ${size[@]+"${size[@]}"}
    step members 180 python3 bench/fused.py --device "$dev" --members "$members" --repeats 2 --threads 1 \
        ${size[@]+"${size[@]}"}
    step runs 150 python3 bench/gpu_runs.py --device "$dev" --specs examples/mnist1d.mnet examples/v5.mnet \
        --epochs-scale 0.05 "${runs[@]}"
    if [ -n "$FAILED" ]; then
        echo "== done; failed or cut short:$FAILED; tables in $OUT"
        return 1
    fi
    echo "== done; tables in $OUT"
}

case "${1:-}" in
    fetch) fetch ;;
    run) run "${2:-}" || exit 1 ;;
    *) echo "usage: bash bench/gpu_check.sh fetch | run OUT" >&2; exit 2 ;;
esac
