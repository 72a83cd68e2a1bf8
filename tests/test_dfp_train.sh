#!/bin/sh
# test_dfp_train.sh -- dynamic fixed point training end to end: determinism, resume, the
# statistics log and evaluation, through the dlu command (docs/dfp-training.md).
#
# Checked on small synthetic data from tests/mkidx, --batch 32, a few steps per run:
#   a. the same command twice gives the same weights_digest for --format dfp8, dfp16,
#      w=dfp8,a=dfp8,e=dfp16,g=dfp16 and w=dfp8,a=dfp8,e=dfp8,g=fp32, with --round nearest and
#      stochastic; another --seed gives another digest; nearest and stochastic differ;
#   b. --threads 1 and 2 give the same digest (integer sums are exact, so unlike fp32 the
#      thread count must not matter);
#   c. stopping with --max-steps and resuming from --checkpoint gives the digest of the
#      unbroken run (the scaling-policy states travel in the checkpoint), also with a
#      policy that keeps a history (amax) with hysteresis, and one with an update interval
#      (onebit), across the end of an epoch;
#   d. resuming with another --format, --round or --scale is an error naming the option;
#   e. --stats writes one JSON line per step (or per --stats-every steps) naming every
#      site, each with count == zeros + sum(hist) + nan, formats by class as asked, the
#      input's count = batch * pixels;
#   f. dlu eval --format ... of a DFP checkpoint reports the training run's test accuracy,
#      digest and (evaluated with the same batch) loss, i.e. it restores the exponents;
#   g. the cnn and lenet5 nets train a few steps in dfp8 and dfp16.
# It does NOT check the kernels' arithmetic (tests/test_dfp.c does, bit for bit) nor that
# DFP training reaches a good accuracy (that needs real data and many steps).

. "${top_srcdir:-$(dirname "$0")/..}/tests/lib.sh"
require_programs
command -v python3 >/dev/null 2>&1 || skip "python3 is needed to read the --stats JSON lines"

MLP=$NETS/mlp.net
D=$TMP/data
"$MKIDX" -o "$D" --train 256 --test 64 --noise 120 --seed 21 >/dev/null || skip "mkidx failed"
BASE="--data $D --batch 32 --epochs 3 --lr 0.02 --quiet" # 8 steps per epoch
F=$TMP/run.ckpt

# train NAME ARGS...: dlu train BASE ARGS --json $TMP/NAME.json (mlp unless ARGS has --net);
# a FAIL when it does not exit 0. The digest is then $(digest NAME).
train()
{
    _name=$1
    shift
    case " $* " in
    *" --net "*) run_cmd "$DLU" train $BASE "$@" --json "$TMP/$_name.json" ;;
    *) run_cmd "$DLU" train --net "$MLP" $BASE "$@" --json "$TMP/$_name.json" ;;
    esac
    if [ "$rc" -ne 0 ]; then
        fail "[exit $rc] dlu train $* ($_name)"
        dump_output
        rm -f "$TMP/$_name.json"
    fi
}

digest()
{
    json_str "$TMP/$1.json" weights_digest
}

# same_digest DESC NAME WANT: the run NAME ended with digest WANT (a 64-digit one).
same_digest()
{
    _got=$(digest "$2")
    if [ "${#3}" -eq 64 ] && [ "$_got" = "$3" ]; then
        pass "$1"
    else
        fail "$1: digest ${_got:-none}, expected ${3:-none}"
    fi
}

# other_digest DESC NAME OTHER: the run NAME has a digest, and it is not OTHER.
other_digest()
{
    _got=$(digest "$2")
    if [ "${#_got}" -eq 64 ] && [ "$_got" != "$3" ]; then
        pass "$1"
    else
        fail "$1: digest ${_got:-none}, should differ from ${3:-none}"
    fi
}

FORMATS="dfp8 dfp16 w=dfp8,a=dfp8,e=dfp16,g=dfp16 w=dfp8,a=dfp8,e=dfp8,g=fp32"

echo "== a. determinism"
k=0
for fmt in $FORMATS; do
    for rnd in nearest stochastic; do
        k=$((k + 1))
        train "a$k.1" --format "$fmt" --round "$rnd" --seed 5 --max-steps 8 --threads 2
        train "a$k.2" --format "$fmt" --round "$rnd" --seed 5 --max-steps 8 --threads 2
        d=$(digest "a$k.1")
        same_digest "--format $fmt --round $rnd: the same command twice gives the same digest" "a$k.2" "$d"
        check "--format $fmt --round $rnd: the report names the format" \
            [ "$(json_str "$TMP/a$k.1.json" format)" = "$fmt" ]
        check "--format $fmt --round $rnd: the run took 8 steps" [ "$(json_num "$TMP/a$k.1.json" steps)" = 8 ]
        if [ "$rnd" = stochastic ]; then
            train "a$k.s" --format "$fmt" --round "$rnd" --seed 6 --max-steps 8 --threads 2
            other_digest "--format $fmt --round $rnd: another seed gives another digest" "a$k.s" "$d"
            other_digest "--format $fmt: stochastic and nearest rounding give other digests" "a$k.1" \
                "$(digest "a$((k - 1)).1")"
        fi
    done
done

echo "== b. thread count"
for fmt in $FORMATS; do
    train b1 --format "$fmt" --round stochastic --seed 5 --max-steps 8 --threads 1
    train b2 --format "$fmt" --round stochastic --seed 5 --max-steps 8 --threads 2
    same_digest "--format $fmt: --threads 1 and 2 give the same digest" b2 "$(digest b1)"
done

echo "== c. stop and resume"
for spec in "dfp8|stochastic|overflow" "w=dfp8,a=dfp8,e=dfp16,g=dfp16|nearest|overflow" \
    "dfp16|stochastic|amax:history=4,hysteresis=2" "dfp8|stochastic|onebit:rate=0.001,interval=2"; do
    fmt=${spec%%|*}
    rest=${spec#*|}
    rnd=${rest%%|*}
    pol=${rest#*|}
    R="--format $fmt --round $rnd --scale $pol --seed 5 --threads 2"
    train c0 $R --max-steps 12
    want=$(digest c0)
    rm -f "$F"
    train c1 $R --max-steps 5 --checkpoint "$F"
    other_digest "$fmt $rnd $pol: 5 steps differ from 12" c1 "$want"
    # 9 and 12 cross the end of the first epoch (8 steps)
    train c2 $R --max-steps 9 --checkpoint "$F" --resume "$F"
    train c3 $R --max-steps 12 --checkpoint "$F" --resume "$F"
    same_digest "$fmt $rnd $pol: 5 + 4 + 3 steps through checkpoints = 12 unbroken steps" c3 "$want"
    check "$fmt $rnd $pol: the resumed run reports 12 steps" [ "$(json_num "$TMP/c3.json" steps)" = 12 ]
    check "$fmt $rnd $pol: the resumed train_loss equals the unbroken one" \
        [ "$(json_num "$TMP/c3.json" train_loss)" = "$(json_num "$TMP/c0.json" train_loss)" ]
done

echo "== d. resuming with other formats is refused"
rm -f "$F"
train d0 --format dfp8 --round stochastic --seed 5 --max-steps 4 --checkpoint "$F" --threads 2
R="--net $MLP $BASE --seed 5 --max-steps 8 --threads 2 --resume $F"
expect_fail 1 "--format" "$DLU" train $R --format dfp16 --round stochastic
expect_fail 1 "--format" "$DLU" train $R --format w=dfp8,a=dfp8,e=dfp16,g=dfp16 --round stochastic
expect_fail 1 "--format" "$DLU" train $R
expect_fail 1 "--round" "$DLU" train $R --format dfp8 --round nearest
expect_fail 1 "--round" "$DLU" train $R --format dfp8
expect_fail 1 "--scale" "$DLU" train $R --format dfp8 --round stochastic --scale max
expect_fail 1 "--scale" "$DLU" train $R --format dfp8 --round stochastic --scale overflow:rate=0.001
expect_ok "$DLU" train $R --format dfp8 --round stochastic --scale overflow
rm -f "$F"
train d1 --seed 5 --max-steps 4 --checkpoint "$F" --threads 2
expect_fail 1 "--format" "$DLU" train $R --format dfp8 --round stochastic

echo "== e. --stats"
# stats_ok FILE LINES FMT_BY_CLASS: python3 checks the JSON lines; prints what is wrong.
stats_ok()
{
    python3 - "$@" <<'EOF'
import json, sys
path, nlines, fmts = sys.argv[1], int(sys.argv[2]), sys.argv[3]
want_fmt = dict(kv.split("=") for kv in fmts.split(","))
sites = ["input"]
for layer, dense, first in [("fc1", 1, 1), ("relu1", 0, 0), ("fc2", 1, 0), ("relu2", 0, 0), ("fc3", 1, 0),
                            ("loss", 0, 0)]:
    if layer != "loss":
        sites.append(layer + ".y")
    if not first:
        sites.append(layer + ".dx")
    if dense:
        sites += [layer + ".w", layer + ".dw", layer + ".db"]
inherited = {"relu1.y", "relu1.dx", "relu2.y", "relu2.dx"}
bad = []
lines = open(path).read().splitlines()
if len(lines) != nlines:
    bad.append("%d lines, expected %d" % (len(lines), nlines))
prev = None
for no, line in enumerate(lines, 1):
    try:
        rec = json.loads(line)
    except ValueError as e:
        bad.append("line %d is not JSON: %s" % (no, e))
        continue
    if "step" not in rec or "sites" not in rec or "epoch" not in rec:
        bad.append("line %d lacks step, epoch or sites" % no)
        continue
    if prev is not None and rec["step"] <= prev:
        bad.append("line %d: step %s after %s" % (no, rec["step"], prev))
    prev = rec["step"]
    names = [s.get("name") for s in rec["sites"]]
    if sorted(names) != sorted(sites):
        bad.append("line %d: sites %s, expected %s" % (no, names, sites))
    for s in rec["sites"]:
        for key in ("name", "class", "format", "exp", "policy", "count", "zeros", "overflow", "underflow", "nan",
                    "hist"):
            if key not in s:
                bad.append("line %d: site %s lacks %s" % (no, s.get("name"), key))
                break
        else:
            h = sum(c for k, c in s["hist"])
            if s["count"] != s["zeros"] + h + s["nan"]:
                bad.append("line %d: site %s: count %d != zeros %d + sum(hist) %d + nan %d"
                           % (no, s["name"], s["count"], s["zeros"], h, s["nan"]))
            if s["format"] != want_fmt[s["class"]]:
                bad.append("line %d: site %s of class %s has format %s, expected %s"
                           % (no, s["name"], s["class"], s["format"], want_fmt[s["class"]]))
            if s["policy"] != (s["name"] not in inherited):
                bad.append("line %d: site %s: policy %s" % (no, s["name"], s["policy"]))
            if s["name"] == "input" and s["count"] != 32 * 784:
                bad.append("line %d: input count %d, expected 32 * 784" % (no, s["count"]))
            if any(not (-64 <= k <= 63) or c <= 0 for k, c in s["hist"]):
                bad.append("line %d: site %s: a histogram bin out of [-64, 63] or empty" % (no, s["name"]))
            if s["underflow"] + s["zeros"] + s["nan"] > s["count"] or s["overflow"] > s["count"] - s["zeros"]:
                bad.append("line %d: site %s: counts exceed count" % (no, s["name"]))
print("; ".join(bad[:5]))
sys.exit(1 if bad else 0)
EOF
}

train e0 --format dfp8 --seed 5 --max-steps 6 --threads 2
train e1 --format dfp8 --seed 5 --max-steps 6 --threads 2 --stats "$TMP/e1.jsonl"
if out=$(stats_ok "$TMP/e1.jsonl" 6 w=dfp8,a=dfp8,e=dfp8,g=dfp8); then
    pass "--format dfp8 --stats: 6 lines, every site, count = zeros + sum(hist) + nan"
else
    fail "--format dfp8 --stats: $out"
fi
train e2 --format w=dfp8,a=dfp8,e=dfp16,g=dfp16 --seed 5 --max-steps 6 --threads 2 --stats "$TMP/e2.jsonl" \
    --stats-every 2
if out=$(stats_ok "$TMP/e2.jsonl" 3 w=dfp8,a=dfp8,e=dfp16,g=dfp16); then
    pass "--format w=dfp8,a=dfp8,e=dfp16,g=dfp16 --stats-every 2: 3 lines, formats by class"
else
    fail "--format w=dfp8,a=dfp8,e=dfp16,g=dfp16 --stats-every 2: $out"
fi
same_digest "--stats does not change the training" e1 "$(digest e0)"

echo "== f. dlu eval of a DFP checkpoint"
# The training run evaluates with its own batch (32): dlu eval --batch 32 must then give the
# same loss bits, which it does only with the checkpoint's exponents (after 20 steps they
# differ from a calibration on the first test batch; the accuracy alone hardly notices).
for fmt in dfp8 dfp16 w=dfp8,a=dfp8,e=dfp16,g=dfp16; do
    rm -f "$F"
    train f0 --format "$fmt" --seed 5 --max-steps 20 --threads 2 --checkpoint "$F"
    run_cmd "$DLU" eval --net "$MLP" --data "$D" --weights "$F" --format "$fmt" --batch 32 --json "$TMP/f1.json"
    if [ "$rc" -ne 0 ]; then
        fail "[exit $rc] dlu eval --format $fmt"
        dump_output
        continue
    fi
    acc=$(json_num "$TMP/f0.json" test_accuracy)
    check "--format $fmt: dlu eval reports the training run's test accuracy (${acc:-none})" \
        [ "$(json_num "$TMP/f1.json" accuracy)" = "${acc:-none}" ]
    check "--format $fmt: dlu eval (batch 32) reports the training run's test loss" \
        [ "$(json_num "$TMP/f1.json" loss)" = "$(json_num "$TMP/f0.json" test_loss)" ]
    check "--format $fmt: dlu eval reports the training run's digest" \
        [ "$(json_str "$TMP/f1.json" weights_digest)" = "$(digest f0)" ]
done

echo "== g. cnn and lenet5"
for net in cnn lenet5; do
    for fmt in dfp8 dfp16; do
        train "g.$net.$fmt" --net "$NETS/$net.net" --format "$fmt" --seed 5 --max-steps 2 --threads 2
        d=$(digest "g.$net.$fmt")
        check "$net --format $fmt: 2 steps train and report a digest" [ "${#d}" -eq 64 ]
    done
done

finish
