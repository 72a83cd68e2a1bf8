#!/bin/sh
# main.sh -- the main job: install what is missing, build, train the reference cnn on
# Fashion-MNIST on the CPU in fp32 (EPOCHS, default 3), then the mlp in DFP8 on the CPU
# (the emulated arithmetic of the DLU; the simulated DLU device and the GPU backend are not
# implemented yet, see README). Reports go to out/.
set -eu
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
mkdir -p out
./dlu train --net examples/nets/cnn.net --epochs "${EPOCHS:-3}" --device cpu --format fp32 \
    --seed 0 --json out/main-cnn-cpu-fp32.json
./dlu train --net examples/nets/mlp.net --epochs "${EPOCHS:-3}" --device cpu --format dfp8 \
    --seed 0 --json out/main-mlp-cpu-dfp8.json --stats out/main-mlp-cpu-dfp8.stats.jsonl --stats-every 10
echo "reports: out/main-cnn-cpu-fp32.json out/main-mlp-cpu-dfp8.json (statistics: out/main-mlp-cpu-dfp8.stats.jsonl)"
