#!/bin/sh
# main.sh -- the main job: install what is missing, build, then
#   1. train the mlp on Fashion-MNIST on the simulated DLU (dlusim, examples/hw/dlu-base.ini)
#      in DFP8 for EPOCHS (default 3): the accuracy the DLU-like core would reach, bit for bit
#      the cpu emulation's, with its simulated cycles and energy per epoch;
#   2. print what one cnn training step costs on that core, per layer and phase (dlu sim);
#   3. train the cnn on the CPU in fp32 for EPOCHS, the reference;
#   4. on the GPU: the CUDA backend is not written yet (README), so this step says so and
#      is skipped rather than pretending.
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
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "a GPU is present, but the CUDA backend is not written yet (issue 6): no GPU run"
else
    echo "no GPU here (and the CUDA backend is not written yet): no GPU run"
fi
echo "reports in out/: main-mlp-dlusim-dfp8.json, main-cnn-sim.{json,csv,trace.json}, main-cnn-cpu-fp32.json"
