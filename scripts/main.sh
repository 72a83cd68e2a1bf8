#!/bin/sh
# main.sh -- the main job: install what is missing, build, then
#   1. train the mlp on Fashion-MNIST on the simulated DLU (dlusim, examples/hw/dlu-base.ini)
#      in DFP8 for EPOCHS (default 3): the accuracy the DLU-like core would reach, bit for bit
#      the cpu emulation's, with its simulated cycles and energy per epoch;
#   2. print what one cnn training step costs on that core, per layer and phase (dlu sim);
#   3. train the cnn on the CPU in fp32 for EPOCHS, the reference;
#   4. where dlu finds a usable GPU (`dlu info` says cuda is available): train the mlp in DFP8
#      on it, which must give the same weights digest as step 1 (same seed, same bits), and
#      the cnn in fp32. The cuda backend has not yet been run on a GPU by this project
#      (docs/cuda.md); without a GPU this step says so and is skipped.
# Reports go to out/.
set -eu
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
mkdir -p out
E=${EPOCHS:-3}
./dlu train --net examples/nets/mlp.net --epochs "$E" --device dlusim:examples/hw/dlu-base.ini --format dfp8 \
    --seed 0 --json out/main-mlp-dlusim-dfp8.json --stats out/main-mlp-dlusim-dfp8.stats.jsonl --stats-every 10
./dlu sim --hw examples/hw/dlu-base.ini --net examples/nets/cnn.net --batch 128 --format dfp8 \
    --json out/main-cnn-sim.json --csv out/main-cnn-sim.csv --trace out/main-cnn-sim.trace.json
./dlu train --net examples/nets/cnn.net --epochs "$E" --device cpu --format fp32 \
    --seed 0 --json out/main-cnn-cpu-fp32.json
if ./dlu info | grep -q '^ *cuda *available'; then
    ./dlu train --net examples/nets/mlp.net --epochs "$E" --device cuda --format dfp8 \
        --seed 0 --json out/main-mlp-cuda-dfp8.json
    a=$(sed -n 's/.*"weights_digest": "\(.*\)".*/\1/p' out/main-mlp-dlusim-dfp8.json)
    b=$(sed -n 's/.*"weights_digest": "\(.*\)".*/\1/p' out/main-mlp-cuda-dfp8.json)
    if [ "$a" = "$b" ]; then echo "mlp dfp8: cuda digest = dlusim digest ($a)"; else echo "mlp dfp8: cuda digest $b differs from dlusim's $a" >&2; exit 1; fi
    ./dlu train --net examples/nets/cnn.net --epochs "$E" --device cuda --format fp32 \
        --seed 0 --json out/main-cnn-cuda-fp32.json
else
    echo "no usable GPU here ($(./dlu info | sed -n 's/^ *cuda *//p')): no GPU run"
fi
echo "reports in out/: main-mlp-dlusim-dfp8.json, main-cnn-sim.{json,csv,trace.json}, main-cnn-cpu-fp32.json"
