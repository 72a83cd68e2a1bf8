#!/bin/sh
# train_cuda.sh -- GPU training benchmark: samples/s and test accuracy of mlp and cnn in
# fp32 and dfp8 on the cuda backend, beside PyTorch eager on the same GPU, same nets, batch
# (128), optimizer (SGD, momentum 0.9, lr 0.05), data order policy (reshuffled every epoch)
# and number of epochs, measured in the same call.
#
#   bench/train_cuda.sh [EPOCHS]        (default 3)
#
# Environment: DLU (the dlu program, default ./dlu), PYTHON (a python with torch and CUDA,
# default python3), DATA (the Fashion-MNIST folder, default dlu's). Prints a markdown
# table with the GPU's name; scripts/device_run.sh saves it. samples/s counts training
# steps only (no evaluation), for both.
set -eu
cd "$(dirname "$0")/.."
epochs=${1:-3}
DLU=${DLU:-./dlu}
PYTHON=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 || echo unknown)
day=$(date -u +%Y-%m-%d)
dataopt=${DATA:+--data $DATA}
get() { python3 -c "import json,sys; d=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print(d[sys.argv[2]])" "$1" "$2"; }

echo "# GPU training benchmark, $day"
echo
echo "GPU: $gpu. Batch 128, SGD momentum 0.9, lr 0.05, $epochs epoch(s), seed 0 for both."
echo
echo "| net | format | dlu samples/s | dlu test acc | PyTorch eager fp32 samples/s | PyTorch test acc | dlu / PyTorch |"
echo "|---|---|---|---|---|---|---|"
for net in mlp cnn; do
    $PYTHON bench/peers/torch_train.py --net $net --epochs "$epochs" --seed 0 --device cuda ${DATA:+--data $DATA} \
        >"$tmp/$net.torch" 2>"$tmp/$net.torch.err" || { cat "$tmp/$net.torch.err" >&2; echo "PyTorch run failed" >&2; }
    psps=$(tail -n 1 "$tmp/$net.torch" | python3 -c "import json,sys; print(json.loads(sys.stdin.read())['train_samples_per_second'])" 2>/dev/null || echo n/a)
    pacc=$(tail -n 1 "$tmp/$net.torch" | python3 -c "import json,sys; print('%.4f' % json.loads(sys.stdin.read())['test_accuracy'])" 2>/dev/null || echo n/a)
    for fmt in fp32 dfp8; do
        if "$DLU" train --net examples/nets/$net.net --device cuda --format $fmt --epochs "$epochs" $dataopt \
            --quiet --json "$tmp/$net-$fmt.json" >/dev/null 2>"$tmp/$net-$fmt.err"; then
            sps=$(get "$tmp/$net-$fmt.json" samples_per_second)
            acc=$(get "$tmp/$net-$fmt.json" test_accuracy)
            ratio=n/a
            [ "$psps" = n/a ] || ratio=$(python3 -c "print('%.2f' % ($sps / $psps))")
            printf '| %s | %s | %.0f | %.4f | %s | %s | %s |\n' $net $fmt "$sps" "$acc" \
                "$(python3 -c "print('%.0f' % float('$psps'))" 2>/dev/null || echo n/a)" "$pacc" "$ratio"
        else
            printf '| %s | %s | failed: %s | | | | |\n' $net $fmt "$(head -n 1 "$tmp/$net-$fmt.err")"
        fi
    done
done
