#!/bin/sh
# device_run.sh -- on the lent GPU machine: unpack the carried libraries, then run the GPU
# tests and benchmarks, writing logs and result tables into $OUT (docs/cuda.md).
#   sh scripts/device_run.sh [tests] [sanitize] [gemm] [train]   (default: all four)
# Expects .carry/ from scripts/device_prep.sh.
set -u
cd "$(dirname "$0")/.."
top=$(pwd)
OUT=${OUT:-$top/out}
mkdir -p "$OUT" /tmp/dlu-root
for d in .carry/debs/*.deb; do dpkg -x "$d" /tmp/dlu-root; done
export LD_LIBRARY_PATH=/tmp/dlu-root/usr/lib/x86_64-linux-gnu:/tmp/dlu-root/lib/x86_64-linux-gnu:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
mkdir -p /usr/share/datasets
[ -e /usr/share/datasets/fashion-mnist ] || ln -s "$top/.carry/data" /usr/share/datasets/fashion-mnist
B=$top/.carry/build
what=${*:-tests sanitize gemm train}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
"$B/dlu" info | tee "$OUT/info.txt"
for w in $what; do
    case $w in
    tests)
        top_builddir=$B top_srcdir=$top sh tests/test_cuda.sh 2>&1 | tee "$OUT/test_cuda.log" ;;
    sanitize)
        # compute-sanitizer over a short DFP and fp32 run: memcheck, then racecheck
        for tool in memcheck racecheck; do
            for f in dfp8 fp32; do
                compute-sanitizer --tool $tool --error-exitcode 9 "$B/dlu" train --net examples/nets/cnn.net \
                    --device cuda --format $f --max-steps 3 --no-eval --quiet
                echo "compute-sanitizer $tool cnn $f: exit $?"
            done
        done 2>&1 | tee "$OUT/sanitizer.log" ;;
    gemm)
        "$B/bench/cuda_gemm" 2>&1 | tee "$OUT/cuda_gemm.md" ;;
    train)
        DLU="$B/dlu" sh bench/train_cuda.sh 2>&1 | tee "$OUT/train_cuda.md" ;;
    esac
done
