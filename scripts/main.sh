#!/bin/sh
# main.sh -- the main job: install what is missing, build, and train the reference cnn on
# Fashion-MNIST on the CPU in fp32, printing the test accuracy after each epoch.
# (DFP8 on the simulated DLU and training on a GPU are not implemented yet; see README.)
set -eu
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
mkdir -p out
./dlu train --net examples/nets/cnn.net --epochs "${EPOCHS:-3}" --device cpu --format fp32 \
    --seed 0 --json out/main-cnn-cpu-fp32.json
echo "report: out/main-cnn-cpu-fp32.json"
