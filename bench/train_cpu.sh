#!/bin/sh
# train_cpu.sh -- CPU training benchmark: samples/s of mlp and cnn in fp32, dfp16 and dfp8,
# and the share of each fp32 step spent inside BLAS, beside PyTorch eager (fp32) measured
# in the same run.
#
#   bench/train_cpu.sh [STEPS]        (default 200 steps per net, batch 128, 2 threads)
#
# Prints a table and writes bench/results/train_cpu-HOST-DATE.md. The PyTorch peer needs the
# ignored venv from bench/peers/setup_venv.sh; without it the peer columns say "n/a".
# Numbers are wall-clock on whatever else the machine is doing: run it on a quiet machine.
set -eu
cd "$(dirname "$0")/.."
steps=${1:-200}
threads=${THREADS:-2}
venv=${VENV:-.venv-bench}
host=$(hostname 2>/dev/null || echo unknown)
cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //' || echo unknown)
day=$(date -u +%Y-%m-%d)
out=bench/results/train_cpu-$day.md
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

[ -x ./dlu ] || { echo "train_cpu: build first (./scripts/bootstrap.sh)" >&2; exit 1; }

json_get() { # FILE KEY -> number
    python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"
}

{
echo "# CPU training benchmark, $day"
echo
echo "Machine: $cpu, $(nproc) cores; host $host. dlu $(./dlu --version | awk '{print $3}'), $threads threads,"
echo "batch 128, SGD momentum 0.9, lr 0.05, $steps steps per net (no evaluation in the timed loop)."
echo
echo "| net | format | dlu samples/s | share of step in BLAS | PyTorch eager fp32 samples/s | dlu / PyTorch |"
echo "|---|---|---|---|---|---|"
} > "$tmp/table"

for net in mlp cnn; do
    peer="n/a"
    if [ -x "$venv/bin/python" ]; then
        "$venv/bin/python" bench/peers/torch_train.py --net $net --max-steps "$steps" --threads "$threads" \
            > "$tmp/$net.torch" 2>&1 || true
        peer=$(tail -n 1 "$tmp/$net.torch" | python3 -c "import json,sys; print(json.loads(sys.stdin.read())['train_samples_per_second'])" 2>/dev/null || echo "n/a")
    fi
    for fmt in fp32 dfp16 dfp8; do
        ./dlu train --net examples/nets/$net.net --max-steps "$steps" --threads "$threads" --no-eval --quiet \
            --format $fmt --json "$tmp/$net-$fmt.json" > /dev/null
        sps=$(json_get "$tmp/$net-$fmt.json" samples_per_second)
        share=$(json_get "$tmp/$net-$fmt.json" gemm_share)
        ratio="n/a"
        peerc="n/a"
        if [ "$peer" != "n/a" ]; then
            ratio=$(python3 -c "print('%.2f' % ($sps / $peer))")
            peerc=$(python3 -c "print('%.0f' % $peer)")
        fi
        sharec=$(python3 -c "print('%.1f%%' % ($share * 100))")
        [ "$fmt" = fp32 ] || sharec="(integer GEMM)"
        printf '| %s | %s | %.0f | %s | %s | %s |\n' "$net" "$fmt" "$sps" "$sharec" "$peerc" "$ratio" >> "$tmp/table"
    done
done
cat "$tmp/table"
cp "$tmp/table" "$out"
echo
echo "recorded in $out"
