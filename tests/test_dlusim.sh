#!/bin/sh
# test_dlusim.sh -- the simulated DLU from the command line: training on --device dlusim
# gives the cpu backend's bits, and `dlu sim` reports consistent figures.
#
# Checked:
#   a. dlu train --device dlusim:CONFIG gives the same weights_digest and test accuracy as
#      --device cpu, on synthetic data, for mlp, cnn and lenet5, in dfp8 and dfp16, with
#      nearest and stochastic rounding, mixed formats (w=dfp16,a=dfp8,e=dfp8,g=fp32), a
#      scaling policy that calibrates, SGD and Adam, and two hardware configs (two tilings) --
#      in verification mode the DFP GEMM values move through the model's memories, so a
#      wrong tiling, gather, scoreboard or requantization shows up here as another digest;
#   b. the run reports simulated cycles and energy per epoch and in all, in its output
#      and in --json;
#   c. dlu sim prints a table, its JSON holds layers and phases whose cycles add up to the
#      step's, and its CSV has one row per layer and phase plus the total; --trace writes
#      a JSON trace;
#   d. bad devices, configs and command lines fail with a message naming what was wrong.
# Skipped (77) when the build has no dlusim backend (configure found no SystemC).

. "${top_srcdir:-$(dirname "$0")/..}/tests/lib.sh"
require_programs
"$DLU" info 2>/dev/null | grep -q 'dlusim.*SystemC' && ! "$DLU" info 2>/dev/null | grep -q 'dlusim.*absent' ||
    skip "this build has no dlusim backend (SystemC not found)"
command -v python3 >/dev/null 2>&1 || skip "python3 is needed to read the JSON reports"

HW=$top_srcdir/examples/hw
D=$TMP/data
"$MKIDX" -o "$D" --train 96 --test 32 --noise 120 --seed 5 >/dev/null || skip "mkidx failed"
BASE="--data $D --batch 16 --epochs 2 --lr 0.02 --quiet" # 6 steps per epoch

# train NAME DEVICE ARGS...: dlu train on DEVICE, report in $TMP/NAME.json.
train()
{
    _name=$1
    _dev=$2
    shift 2
    run_cmd "$DLU" train $BASE --device "$_dev" "$@" --json "$TMP/$_name.json"
    if [ "$rc" -ne 0 ]; then
        fail "[exit $rc] dlu train --device $_dev $* ($_name)"
        dump_output
        rm -f "$TMP/$_name.json"
    fi
}

# same NAME ARGS...: cpu and dlusim (both configs) give the same digest and accuracy.
same()
{
    _n=$1
    shift
    train "$_n.cpu" cpu "$@"
    for _cfg in dlu-small dlu-base; do
        train "$_n.$_cfg" "dlusim:$HW/$_cfg.ini" "$@"
        _a=$(json_str "$TMP/$_n.cpu.json" weights_digest)
        _b=$(json_str "$TMP/$_n.$_cfg.json" weights_digest)
        _aa=$(json_num "$TMP/$_n.cpu.json" test_accuracy)
        _ba=$(json_num "$TMP/$_n.$_cfg.json" test_accuracy)
        if [ -n "$_a" ] && [ "$_a" = "$_b" ] && [ "$_aa" = "$_ba" ]; then
            pass "dlusim:$_cfg = cpu, digest ${_a%"${_a#????????????}"}..., accuracy $_aa: $*"
        else
            fail "dlusim:$_cfg != cpu: $* (digest '$_b' accuracy $_ba vs '$_a' $_aa)"
        fi
    done
}

# a. bit-exact training
same mlp8n --net "$NETS/mlp.net" --format dfp8 --round nearest
same mlp8s --net "$NETS/mlp.net" --format dfp8 --round stochastic
same mlp16 --net "$NETS/mlp.net" --format dfp16
same mixed --net "$NETS/mlp.net" --format w=dfp16,a=dfp8,e=dfp8,g=fp32
same maxp --net "$NETS/mlp.net" --format dfp8 --scale max
same adam --net "$NETS/mlp.net" --format dfp16 --optimizer adam
same cnn8 --net "$NETS/cnn.net" --format dfp8 --max-steps 3
same cnn16 --net "$NETS/cnn.net" --format dfp16 --round stochastic --max-steps 2
same lenet --net "$NETS/lenet5.net" --format dfp8 --max-steps 3

# b. the simulated cost is reported
run_cmd "$DLU" train --net "$NETS/mlp.net" --data "$D" --batch 16 --epochs 2 --lr 0.02 --format dfp8 \
    --device "dlusim:$HW/dlu-small.ini" --json "$TMP/rep.json"
check "dlu train on dlusim prints the simulated cost of each epoch" \
    [ "$(grep -c 'simulated epoch [12]: [0-9]* cycles, .* s at 1000 MHz, .* J' "$STDOUT")" -eq 2 ]
check "... and of the whole training" grep -q '^simulated training to this accuracy: [0-9]* cycles' "$STDOUT"
python3 - "$TMP/rep.json" <<'EOF' >"$TMP/py.out" 2>&1
import json, sys
r = json.load(open(sys.argv[1]))
s = r["sim"]
assert s["cycles"] > 0 and s["energy_j"] > 0 and s["macs"] > 0, s
e = s["epochs"]
assert [x["epoch"] for x in e] == [1, 2], e
assert sum(x["cycles"] for x in e) == s["cycles"], "epochs do not add up to the total"
assert abs(sum(x["energy_j"] for x in e) - s["energy_j"]) <= 1e-9 * s["energy_j"]
# mlp 784-256-256-10, 16 samples a step: forward, backward-weight and backward-data except
# the first layer's (the input needs no gradient); 12 steps, plus the first step's
# calibration pass (every GEMM once more, statistics only); evaluation not counted
fwd = 784 * 256 + 256 * 256 + 256 * 10
want = (12 + 1) * 16 * (3 * fwd - 784 * 256)
assert s["macs"] == want, (s["macs"], want)
print("ok")
EOF
check "--json has sim cycles, energy and MACs (exactly the GEMMs of 12 steps + one calibration pass), per epoch adding up" \
    grep -qx ok "$TMP/py.out" || cat "$TMP/py.out"

# c. dlu sim
expect_ok "$DLU" sim --hw "$HW/dlu-small.ini" --net "$NETS/cnn.net" --batch 8 --steps 2 --json "$TMP/sim.json" \
    --csv "$TMP/sim.csv" --trace "$TMP/trace.json"
check "dlu sim prints a per-layer table with a total" grep -q '^step  *total ' "$STDOUT"
python3 - "$TMP/sim.json" "$TMP/sim.csv" "$TMP/trace.json" <<'EOF' >"$TMP/py.out" 2>&1
import csv, json, sys
r = json.load(open(sys.argv[1]))
step = r["step"]["cycles"]
layers = sum(p["cycles"] for l in r["layers"] for p in l["phases"].values())
phases = sum(p["cycles"] for p in r["phases"].values())
assert abs(layers - step) < 1e-6 * step and abs(phases - step) < 1e-6 * step, (layers, phases, step)
names = [l["name"] for l in r["layers"]]
assert "conv1" in names and "fc2" in names, names
for l in r["layers"]:
    for ph, p in l["phases"].items():
        c = p["cycles_by_cause"]
        assert abs(sum(c.values()) - p["cycles"]) < 1e-6 * max(1, p["cycles"]), (l["name"], ph, c, p["cycles"])
        for u, v in p["utilisation"].items():
            assert 0 <= v <= 1 + 1e-9, (l["name"], ph, u, v)
ph = r["phases"]
assert ph["fwd"]["cycles"] > 0 and ph["bwd_data"]["cycles"] > 0 and ph["bwd_weight"]["cycles"] > 0
assert ph["stats"]["cycles"] > 0 and ph["update"]["cycles"] > 0, ph
rows = list(csv.DictReader(open(sys.argv[2])))
assert rows[-1]["layer"] == "step" and abs(float(rows[-1]["cycles"]) - step) < 1e-6 * step
t = json.load(open(sys.argv[3]))
assert len(t["traceEvents"]) > 10
print("ok")
EOF
check "dlu sim JSON: layers and phases add up to the step, causes to each row, utilisation in [0,1]; CSV; trace" \
    grep -qx ok "$TMP/py.out" || cat "$TMP/py.out"

# d. errors
expect_fail 2 "dlusim needs a hardware config" "$DLU" train --net "$NETS/mlp.net" $BASE --device dlusim
expect_fail 2 "nope.ini" "$DLU" train --net "$NETS/mlp.net" $BASE --device dlusim:$TMP/nope.ini
printf '[core]\nn_dpu = 4\nwarp_size = 32\n' >"$TMP/bad.ini"
expect_fail 2 "warp_size" "$DLU" sim --hw "$TMP/bad.ini" --net "$NETS/mlp.net"
printf '[core]\nn_dpu = 0\n' >"$TMP/bad.ini"
expect_fail 2 "n_dpu" "$DLU" sim --hw "$TMP/bad.ini" --net "$NETS/mlp.net"
printf '[hbm]\nhbm_capacity_mib = 1\n' >"$TMP/tiny.ini"
expect_fail 1 "out of simulated HBM" "$DLU" sim --hw "$TMP/tiny.ini" --net "$NETS/cnn.net"
expect_fail 2 "--net FILE is required" "$DLU" sim --hw "$HW/dlu-base.ini"
expect_fail 2 "--hw CONFIG.ini is required" "$DLU" sim --net "$NETS/mlp.net"
expect_fail 2 "--batch" "$DLU" sim --hw "$HW/dlu-base.ini" --net "$NETS/mlp.net" --batch 0
expect_fail 2 "--format" "$DLU" sim --hw "$HW/dlu-base.ini" --net "$NETS/mlp.net" --format dfp9
expect_fail 1 "missing.net" "$DLU" sim --hw "$HW/dlu-base.ini" --net "$TMP/missing.net"
expect_fail 2 "--json" "$DLU" sim --hw "$HW/dlu-base.ini" --net "$NETS/mlp.net" --json /nonexistent/dir/x.json

finish
