#!/bin/sh
# test_cli.sh -- every bad input to the `dlu` program gives a clear error and the right
# exit status, never a crash.
#
# Exit statuses (runtime/cli/cli.h): 2 for a bad command line (unknown command or
# option, a missing or out-of-range option value), 1 for bad inputs found while working
# (net file, data folder, device, checkpoint, report path). Each case checks the status,
# that stderr says something, and a key phrase of the message; a status >= 128 (a signal)
# is always a failure. Data comes from tests/mkidx: a tiny learnable set (512 train, 128
# test, 1x28x28) that examples/nets/mlp.net trains on in a fraction of a second with
# --max-steps. It does NOT check training results or resume exactness (test_resume.sh).

. "${top_srcdir:-$(dirname "$0")/..}/tests/lib.sh"
require_programs

MLP=$NETS/mlp.net
D=$TMP/data
"$MKIDX" -o "$D" --train 512 --test 128 --seed 3 || skip "mkidx failed"
T="--max-steps 3 --batch 32 --quiet"

echo "== command line (exit 2)"
expect_fail 2 "usage: dlu COMMAND" "$DLU"
expect_fail 2 "unknown command 'frob'" "$DLU" frob
expect_fail 2 "unknown command '--frob'" "$DLU" --frob
expect_fail 2 "unrecognized option '--frob'" "$DLU" train --frob
expect_fail 2 "unrecognized option '--frob'" "$DLU" eval --frob
expect_fail 2 "unrecognized option '--frob'" "$DLU" info --frob
expect_fail 2 "option '--net' requires an argument" "$DLU" train --net
expect_fail 2 "option '--epochs' requires an argument" "$DLU" train --net "$MLP" --epochs
expect_fail 2 "option '--weights' requires an argument" "$DLU" eval --net "$MLP" --weights
expect_fail 2 "unexpected argument 'extra'" "$DLU" train --net "$MLP" extra
expect_fail 2 "unexpected argument 'extra'" "$DLU" eval --net "$MLP" --weights x extra
expect_fail 2 "unexpected argument 'extra'" "$DLU" info extra
expect_fail 2 "--epochs '0': expected an integer in [1," "$DLU" train --net "$MLP" --epochs 0
expect_fail 2 "--epochs 'abc': expected an integer" "$DLU" train --net "$MLP" --epochs abc
expect_fail 2 "--epochs '2.5': expected an integer" "$DLU" train --net "$MLP" --epochs 2.5
expect_fail 2 "--epochs '99999999999999999999'" "$DLU" train --net "$MLP" --epochs 99999999999999999999
expect_fail 2 "--epochs '': expected an integer" "$DLU" train --net "$MLP" --epochs ""
expect_fail 2 "--max-steps '0'" "$DLU" train --net "$MLP" --max-steps 0
expect_fail 2 "--max-steps '-5'" "$DLU" train --net "$MLP" --max-steps -5
expect_fail 2 "--lr '-1': expected a number" "$DLU" train --net "$MLP" --lr -1
expect_fail 2 "--lr '0': expected a number" "$DLU" train --net "$MLP" --lr 0
expect_fail 2 "--lr 'nan'" "$DLU" train --net "$MLP" --lr nan
expect_fail 2 "--lr 'inf'" "$DLU" train --net "$MLP" --lr inf
expect_fail 2 "--lr '0.1x'" "$DLU" train --net "$MLP" --lr 0.1x
expect_fail 2 "--momentum '1'" "$DLU" train --net "$MLP" --momentum 1
expect_fail 2 "--momentum '-0.1'" "$DLU" train --net "$MLP" --momentum -0.1
expect_fail 2 "--weight-decay '-1'" "$DLU" train --net "$MLP" --weight-decay -1
expect_fail 2 "--batch '0': expected an integer in [1, 65536]" "$DLU" train --net "$MLP" --batch 0
expect_fail 2 "--batch '65537'" "$DLU" train --net "$MLP" --batch 65537
expect_fail 2 "--batch '0'" "$DLU" eval --net "$MLP" --weights x --batch 0
expect_fail 2 "--seed '-3': expected an integer in [0," "$DLU" train --net "$MLP" --seed -3
expect_fail 2 "--seed '0x10'" "$DLU" train --net "$MLP" --seed 0x10
expect_fail 2 "--threads '0'" "$DLU" train --net "$MLP" --threads 0
expect_fail 2 "--checkpoint-every '0'" "$DLU" train --net "$MLP" --checkpoint-every 0
expect_fail 2 "--optimizer 'rmsprop': expected sgd or adam" "$DLU" train --net "$MLP" --optimizer rmsprop
expect_fail 2 "--split 'valid': expected test or train" "$DLU" eval --net "$MLP" --weights x --split valid
expect_fail 2 "--net FILE is required" "$DLU" train --epochs 1
expect_fail 2 "--net FILE and --weights FILE are required" "$DLU" eval --net "$MLP"
expect_fail 2 "--net FILE and --weights FILE are required" "$DLU" eval --weights x
expect_fail 2 "--format 'dfp99': unknown (expected fp32, dfp8 or dfp16" "$DLU" train --net "$MLP" --data "$D" --format dfp99
expect_fail 2 "unknown tensor class 'x'" "$DLU" train --net "$MLP" --data "$D" --format w=dfp8,x=dfp8
expect_fail 2 "class g missing" "$DLU" train --net "$MLP" --data "$D" --format w=dfp8,a=dfp8,e=dfp8
expect_fail 2 "class w given twice" "$DLU" train --net "$MLP" --data "$D" --format w=dfp8,w=dfp8,a=dfp8,e=dfp8,g=dfp8
expect_fail 2 "'dfp4' for class e is unknown" "$DLU" train --net "$MLP" --data "$D" --format w=dfp8,a=dfp8,e=dfp4,g=dfp8
expect_fail 2 "class a is fp32 while others are DFP" "$DLU" train --net "$MLP" --data "$D" --format w=dfp8,a=fp32,e=dfp8,g=dfp8
expect_fail 2 "--round 'up': unknown" "$DLU" train --net "$MLP" --data "$D" --format dfp8 --round up
expect_fail 2 "--scale" "$DLU" train --net "$MLP" --data "$D" --format dfp8 --scale nosuchpolicy
expect_fail 2 "--stats-every '0'" "$DLU" train --net "$MLP" --data "$D" --format dfp8 --stats-every 0

echo "== help and version (exit 0)"
for sub in train eval info; do
    run_cmd "$DLU" "$sub" --help
    case $sub in
    train) opts="--net --data --epochs --max-steps --batch --optimizer --lr --momentum --weight-decay --seed \
--device --format --threads --json --checkpoint --checkpoint-every --resume --no-eval --quiet" ;;
    eval) opts="--net --weights --data --split --device --batch --json" ;;
    info) opts="--net" ;;
    esac
    missing=
    for o in $opts; do
        grep -qF -- "$o" "$STDOUT" || missing="$missing $o"
    done
    check "dlu $sub --help exits 0 and names its options${missing:+ (missing:$missing)}" \
        [ "$rc" -eq 0 -a -z "$missing" -a ! -s "$STDERR" ]
    run_cmd "$DLU" "$sub" -h
    check "dlu $sub -h exits 0" [ "$rc" -eq 0 -a -s "$STDOUT" ]
done
for h in --help -h help; do
    run_cmd "$DLU" "$h"
    check "dlu $h lists the commands" \
        sh -c "[ $rc -eq 0 ] && grep -q train '$STDOUT' && grep -q eval '$STDOUT' && grep -q info '$STDOUT'"
done
run_cmd "$DLU" --version
check "dlu --version" sh -c "[ $rc -eq 0 ] && grep -q '^dlu (OpenDLU) ' '$STDOUT'"
expect_ok "$DLU" info
for n in mlp:269322 cnn:857738 lenet5:61706; do
    run_cmd "$DLU" info --net "$NETS/${n%%:*}.net"
    check "dlu info --net ${n%%:*}.net: total ${n#*:} parameters" \
        sh -c "[ $rc -eq 0 ] && grep -q 'total: ${n#*:} parameters' '$STDOUT'"
done

echo "== net files (exit 1)"
printf '[net]\ninput = 1x28x28\n[fc1]\nop = linear\nout = abc\n[loss]\nop = softmax_xent\n' >"$TMP/bad.net"
: >"$TMP/empty.net"
sed -e '/^\[fc1\]/,/^out/s/^out = 256/out = 128/' "$MLP" >"$TMP/mlp128.net" # same layers, fc1 narrower
printf '[net]\ninput = 1x28x28\n[fc1]\nop = linear\nout = 10\n[loss]\nop = softmax_xent\n[extra]\nop = relu\n' >"$TMP/late.net"
expect_fail 1 "cannot open net file" "$DLU" train --net "$TMP/no-such.net" --data "$D"
expect_fail 1 "$TMP/bad.net:5: out = 'abc'" "$DLU" train --net "$TMP/bad.net" --data "$D"
expect_fail 1 "$TMP/bad.net:5: out = 'abc'" "$DLU" eval --net "$TMP/bad.net" --weights x --data "$D"
expect_fail 1 "$TMP/bad.net:5: out = 'abc'" "$DLU" info --net "$TMP/bad.net"
expect_fail 1 "$TMP/late.net:6: layer [loss]: softmax_xent must be the last layer" "$DLU" info --net "$TMP/late.net"
expect_fail 1 "$TMP/empty.net:1: no [net] section" "$DLU" train --net "$TMP/empty.net" --data "$D"
expect_fail 1 "cannot open net file" "$DLU" info --net "$TMP/no-such.net"
expect_fail 1 "$TMP" "$DLU" train --net "$TMP" --data "$D"

echo "== devices (exit 2 for a malformed device string, 1 for an absent device)"
expect_fail 2 "unknown device kind 'nosuch'" "$DLU" train --net "$MLP" --data "$D" $T --device nosuch
# Without a usable CUDA backend (dlu info says "absent"), cuda:0 must fail clearly.
if "$DLU" info | grep -q '^ *cuda *available'; then
    expect_ok "$DLU" train --net "$MLP" --data "$D" $T --device cuda:0
else
    expect_fail 1 "device 'cuda:0'" "$DLU" train --net "$MLP" --data "$D" $T --device cuda:0
    expect_fail 1 "device 'cuda'" "$DLU" train --net "$MLP" --data "$D" $T --device cuda
    expect_fail 1 "device 'cuda:0'" "$DLU" eval --net "$MLP" --data "$D" --weights x --device cuda:0
fi
if ! "$DLU" info | grep -q '^ *cuda .*no CUDA backend'; then # built in, GPU or not
    expect_fail 2 "the device index must be a number" "$DLU" train --net "$MLP" --data "$D" $T --device cuda:abc
    expect_fail 2 "the device index must be a number" "$DLU" train --net "$MLP" --data "$D" $T --device cuda:-1
fi
if "$DLU" info | grep -q '^  dlusim  built in'; then
    expect_fail 2 "x.ini" "$DLU" train --net "$MLP" --data "$D" $T --device dlusim:x.ini
else
    expect_fail 1 "the simulated DLU is not built in" "$DLU" train --net "$MLP" --data "$D" $T --device dlusim:x.ini
fi
expect_fail 2 "the cpu device takes no argument" "$DLU" train --net "$MLP" --data "$D" $T --device cpu:1
expect_fail 2 "empty device string" "$DLU" train --net "$MLP" --data "$D" $T --device ""

echo "== data folders (exit 1)"
mkdir "$TMP/magic" "$TMP/trunc" "$TMP/count" "$TMP/lmagic" "$TMP/trail" "$TMP/nolabels" "$TMP/gzbad"
cp "$D"/* "$TMP/magic/" && printf 'XXXX' | dd of="$TMP/magic/train-images-idx3-ubyte" conv=notrunc 2>/dev/null
cp "$D"/* "$TMP/lmagic/" && printf 'XXXX' | dd of="$TMP/lmagic/t10k-labels-idx1-ubyte" conv=notrunc 2>/dev/null
cp "$D"/* "$TMP/trunc/" && head -c 100000 "$D/train-images-idx3-ubyte" >"$TMP/trunc/train-images-idx3-ubyte"
cp "$D"/* "$TMP/trail/" && printf 'junk' >>"$TMP/trail/t10k-images-idx3-ubyte"
cp "$D"/* "$TMP/nolabels/" && rm "$TMP/nolabels/train-labels-idx1-ubyte"
"$MKIDX" -o "$TMP/d100" --train 100 --test 128 --seed 3 >/dev/null
cp "$D"/* "$TMP/count/" && cp "$TMP/d100/train-labels-idx1-ubyte" "$TMP/count/"
"$MKIDX" -o "$TMP/s8" --size 8x8 --train 64 --test 16 >/dev/null
"$MKIDX" -o "$TMP/rgb" --size 3x28x28 --train 64 --test 16 >/dev/null
"$MKIDX" -o "$TMP/c12" --classes 12 --train 64 --test 16 >/dev/null
"$MKIDX" -o "$TMP/gz" --gzip --train 64 --test 16 >/dev/null
"$MKIDX" -o "$TMP/empty" --train 0 --test 16 >/dev/null
"$MKIDX" -o "$TMP/gzbad" --gzip --train 64 --test 16 >/dev/null
flip_byte "$TMP/gzbad/train-images-idx3-ubyte.gz" $(($(file_size "$TMP/gzbad/train-images-idx3-ubyte.gz") / 2))
: >"$TMP/a-file"
expect_fail 1 "neither train-images-idx3-ubyte nor train-images-idx3-ubyte.gz" \
    "$DLU" train --net "$MLP" --data "$TMP/no-such-folder" $T
expect_fail 1 "$TMP/a-file" "$DLU" train --net "$MLP" --data "$TMP/a-file" $T
expect_fail 1 "$TMP/magic/train-images-idx3-ubyte" "$DLU" train --net "$MLP" --data "$TMP/magic" $T
expect_fail 1 "magic" "$DLU" train --net "$MLP" --data "$TMP/magic" $T
expect_fail 1 "$TMP/lmagic/t10k-labels-idx1-ubyte" "$DLU" train --net "$MLP" --data "$TMP/lmagic" $T
expect_fail 1 "$TMP/lmagic/t10k-labels-idx1-ubyte" "$DLU" eval --net "$MLP" --data "$TMP/lmagic" --weights x
expect_fail 1 "truncated images data" "$DLU" train --net "$MLP" --data "$TMP/trunc" $T
expect_fail 1 "$TMP/trail/t10k-images-idx3-ubyte" "$DLU" train --net "$MLP" --data "$TMP/trail" $T
expect_fail 1 "train-labels-idx1-ubyte" "$DLU" train --net "$MLP" --data "$TMP/nolabels" $T
expect_fail 1 "has 100 labels but" "$DLU" train --net "$MLP" --data "$TMP/count" $T
expect_fail 1 "gzip" "$DLU" train --net "$MLP" --data "$TMP/gzbad" $T
expect_fail 1 "samples are 1x8x8 but net mlp takes 1x28x28" "$DLU" train --net "$MLP" --data "$TMP/s8" $T
expect_fail 1 "samples are 3x28x28 but net mlp takes 1x28x28" "$DLU" train --net "$MLP" --data "$TMP/rgb" $T
expect_fail 1 "labels up to 11 but net mlp has 10 classes" "$DLU" train --net "$MLP" --data "$TMP/c12" $T
expect_fail 1 "$TMP/empty/train-images-idx3-ubyte" "$DLU" train --net "$MLP" --data "$TMP/empty" $T
expect_ok "$DLU" train --net "$MLP" --data "$TMP/gz" $T
sed -e 's/^input = 1x28x28/input = 3x28x28/' "$MLP" >"$TMP/rgb.net"
expect_ok "$DLU" train --net "$TMP/rgb.net" --data "$TMP/rgb" $T

echo "== checkpoints and resume (exit 1)"
C=$TMP/c.ckpt
expect_ok "$DLU" train --net "$MLP" --data "$D" $T --seed 5 --checkpoint "$C"
check "the checkpoint exists after a run" [ -s "$C" ]
check "no temp files are left beside it" sh -c "[ -z \"\$(ls '$TMP' | grep 'c.ckpt.tmp')\" ]"
size=$(file_size "$C")
cp "$C" "$TMP/flip.ckpt" && flip_byte "$TMP/flip.ckpt" $((size / 2))
cp "$C" "$TMP/flip0.ckpt" && flip_byte "$TMP/flip0.ckpt" 0
cp "$C" "$TMP/fliplast.ckpt" && flip_byte "$TMP/fliplast.ckpt" $((size - 1))
head -c $((size / 2)) "$C" >"$TMP/trunc.ckpt"
head -c $((size - 1)) "$C" >"$TMP/trunc1.ckpt"
head -c 10 "$C" >"$TMP/trunc10.ckpt"
: >"$TMP/empty.ckpt"
R="$DLU train --net $MLP --data $D $T --seed 5"
expect_fail 1 "$TMP/missing.ckpt: cannot open checkpoint" $R --resume "$TMP/missing.ckpt"
expect_fail 1 "checksum mismatch" $R --resume "$TMP/flip.ckpt"
expect_fail 1 "not an OpenDLU checkpoint" $R --resume "$TMP/flip0.ckpt"
expect_fail 1 "checksum mismatch" $R --resume "$TMP/fliplast.ckpt"
expect_fail 1 "$TMP/trunc.ckpt" $R --resume "$TMP/trunc.ckpt"
expect_fail 1 "$TMP/trunc1.ckpt" $R --resume "$TMP/trunc1.ckpt"
expect_fail 1 "$TMP/trunc10.ckpt" $R --resume "$TMP/trunc10.ckpt"
expect_fail 1 "$TMP/empty.ckpt" $R --resume "$TMP/empty.ckpt"
expect_fail 1 "not an OpenDLU checkpoint" $R --resume "$MLP"
expect_fail 1 "$TMP" $R --resume "$TMP"
expect_fail 1 "checkpoint has 6 parameter tensors, net lenet5 has 10" \
    "$DLU" train --net "$NETS/lenet5.net" --data "$D" $T --seed 5 --resume "$C"
expect_fail 1 "parameter 0 differs" "$DLU" train --net "$TMP/mlp128.net" --data "$D" $T --seed 5 --resume "$C"
expect_fail 1 "checkpoint was written with --seed 5, this run has 6" \
    "$DLU" train --net "$MLP" --data "$D" $T --seed 6 --resume "$C"
expect_fail 1 "checkpoint was written with --seed 5, this run has 0" \
    "$DLU" train --net "$MLP" --data "$D" $T --resume "$C"
expect_fail 1 "checkpoint was written with --batch 32, this run has 16" \
    "$DLU" train --net "$MLP" --data "$D" --max-steps 3 --batch 16 --quiet --seed 5 --resume "$C"
expect_fail 1 "checkpoint was written with optimizer sgd, this run uses adam" $R --optimizer adam --resume "$C"
expect_fail 1 "training set of size 512, this run has 100" \
    "$DLU" train --net "$MLP" --data "$TMP/d100" $T --seed 5 --resume "$C"
expect_fail 1 "--checkpoint '$TMP/no-such-folder/c.ckpt': cannot write into folder" $R --checkpoint "$TMP/no-such-folder/c.ckpt"
cp "$C" "$TMP/c.orig"
expect_ok $R --resume "$C" --max-steps 5
check "resuming without --checkpoint leaves the checkpoint alone" cmp -s "$C" "$TMP/c.orig"

echo "== dlu eval (exit 1)"
E="$DLU eval --net $MLP --data $D"
expect_fail 1 "$TMP/missing.ckpt: cannot open checkpoint" $E --weights "$TMP/missing.ckpt"
expect_fail 1 "checksum mismatch" $E --weights "$TMP/flip.ckpt"
expect_fail 1 "$TMP/trunc.ckpt" $E --weights "$TMP/trunc.ckpt"
expect_fail 1 "$TMP/empty.ckpt" $E --weights "$TMP/empty.ckpt"
expect_fail 1 "not an OpenDLU checkpoint" $E --weights "$MLP"
expect_fail 1 "checkpoint has 6 parameter tensors, net cnn has 8" \
    "$DLU" eval --net "$NETS/cnn.net" --data "$D" --weights "$C"
expect_fail 1 "parameter 0 differs" "$DLU" eval --net "$TMP/mlp128.net" --data "$D" --weights "$C"
expect_fail 1 "neither t10k-images-idx3-ubyte nor" "$DLU" eval --net "$MLP" --data "$TMP/no-such-folder" --weights "$C"
expect_fail 2 "unknown device kind 'nosuch'" $E --weights "$C" --device nosuch
expect_fail 1 "samples are 1x8x8" "$DLU" eval --net "$MLP" --data "$TMP/s8" --weights "$C"
expect_ok $E --weights "$C"
check "dlu eval prints the accuracy and the digest" sh -c "grep -q 'test accuracy' '$STDOUT' && grep -q 'weights digest [0-9a-f]\{64\}' '$STDOUT'"
expect_ok $E --weights "$C" --split train --batch 7 --json "$TMP/eval.json"
check "dlu eval --json writes the digest" [ "$(json_str "$TMP/eval.json" weights_digest | wc -c)" -eq 65 ]

echo "== reports (exit 1)"
expect_fail 1 "--json '$TMP/no-such-folder/r.json': cannot write into folder" \
    "$DLU" train --net "$MLP" --data "$D" $T --json "$TMP/no-such-folder/r.json"
expect_fail 1 "--json '$TMP/no-such-folder/r.json': cannot write into folder" \
    $E --weights "$C" --json "$TMP/no-such-folder/r.json"
expect_ok "$DLU" train --net "$MLP" --data "$D" $T --json "$TMP/r.json"
check "train --json has a 64-digit weights_digest" [ "$(json_str "$TMP/r.json" weights_digest | wc -c)" -eq 65 ]
check "train --json steps = 3" [ "$(json_num "$TMP/r.json" steps)" = 3 ]

finish
