#!/bin/sh
# test_resume.sh -- a training run that is stopped, or killed, and resumed from its
# checkpoint ends with the same bits as one that was never interrupted.
#
# The promise of include/dlu/train.h: for one net, data set, seed, batch and optimizer
# settings, the final weights (SHA-256 "weights_digest" of --json) are the same on every
# run, whether interrupted and resumed or not. Checked here on synthetic data from
# tests/mkidx (500 samples: 15 full batches of 32 and a partial one per epoch):
#   a. the same command twice gives the same digest D, and D is sensitive (one step
#      fewer, or another seed, gives another digest);
#   b. stopping with --max-steps and resuming gives D, also through a chain of many short
#      runs, and the resumed train_loss equals the unbroken one;
#   c. runs killed with SIGKILL at random moments (also while a checkpoint is being
#      written) and resumed give D; after every kill the checkpoint is either absent or
#      a complete, loadable file (dlu eval --weights reads it);
#   d. the same for Adam (with weight decay);
#   e. checkpoints at an epoch's end and just before the partial batch resume across
#      the epoch boundary to D.
# BLAS results depend on the thread count (libdl/backend/cpu/cpu_dense.c), so every run
# uses --threads 2. It does NOT test bad checkpoints (test_cli.sh, test_ckpt.c).

. "${top_srcdir:-$(dirname "$0")/..}/tests/lib.sh"
require_programs

KILL_TRIES=${KILL_TRIES:-6}
MLP=$NETS/mlp.net
CNN=$NETS/cnn.net
D=$TMP/data
"$MKIDX" -o "$D" --train 500 --test 100 --noise 120 --seed 11 || skip "mkidx failed"
"$MKIDX" -o "$TMP/small" --train 128 --test 32 --noise 120 --seed 12 >/dev/null || skip "mkidx failed"
F=$TMP/run.ckpt
SGD="--batch 32 --seed 7 --lr 0.01 --threads 2 --quiet"
ADAM="--batch 32 --seed 7 --optimizer adam --lr 0.002 --weight-decay 0.0005 --threads 2 --quiet"

# train NAME ARGS...: dlu train --net mlp --data D ARGS --json $TMP/NAME.json; prints nothing,
# reports a FAIL when it does not exit 0. The digest is then $(digest NAME).
train()
{
    _name=$1
    shift
    run_cmd "$DLU" train --net "$MLP" --data "$D" "$@" --json "$TMP/$_name.json"
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

# same_digest DESC NAME WANT: the run NAME ended with digest WANT.
same_digest()
{
    _got=$(digest "$2")
    if [ -n "$_got" ] && [ "$_got" = "$3" ]; then
        pass "$1"
    else
        fail "$1: digest ${_got:-none}, expected $3"
    fi
}

echo "== a. determinism (SGD)"
train a1 $SGD --epochs 4 --max-steps 60
train a2 $SGD --epochs 4 --max-steps 60
DS=$(digest a1)
check "an unbroken run reports a digest" [ "${#DS}" -eq 64 ]
check "the run took 60 steps" [ "$(json_num "$TMP/a1.json" steps)" = 60 ]
same_digest "the same command twice gives the same digest" a2 "$DS"
LS=$(json_num "$TMP/a1.json" train_loss)
check "the same command twice gives the same train_loss ($LS)" [ "$(json_num "$TMP/a2.json" train_loss)" = "$LS" ]
train a59 $SGD --epochs 4 --max-steps 59
check "one step fewer gives another digest" [ "$(digest a59)" != "$DS" ]
train a8 $SGD --epochs 4 --max-steps 60 --seed 8
check "another seed gives another digest" [ "$(digest a8)" != "$DS" ]

echo "== b. stop and resume (SGD)"
rm -f "$F"
train b1 $SGD --epochs 4 --max-steps 25 --checkpoint "$F"
check "a run stopped at step 25 took 25 steps" [ "$(json_num "$TMP/b1.json" steps)" = 25 ]
train b2 $SGD --epochs 4 --max-steps 60 --checkpoint "$F" --resume "$F"
same_digest "stop at 25, resume to 60: same digest" b2 "$DS"
check "stop at 25, resume to 60: same train_loss" [ "$(json_num "$TMP/b2.json" train_loss)" = "$LS" ]
check "the resumed run reports 60 steps in all" [ "$(json_num "$TMP/b2.json" steps)" = 60 ]
run_cmd "$DLU" eval --net "$MLP" --data "$D" --weights "$F" --json "$TMP/b-eval.json"
check "dlu eval of the final checkpoint gives the same digest" [ "$(digest b-eval)" = "$DS" ]
train b3 $SGD --epochs 4 --max-steps 60 --resume "$F"
same_digest "resuming a finished run changes nothing" b3 "$DS"
rm -f "$F"
k=7
while [ $k -lt 60 ]; do
    if [ -f "$F" ]; then
        train chain $SGD --epochs 4 --max-steps $k --checkpoint "$F" --checkpoint-every 3 --resume "$F"
    else
        train chain $SGD --epochs 4 --max-steps $k --checkpoint "$F" --checkpoint-every 3
    fi
    k=$((k + 7))
done
train chain $SGD --epochs 4 --max-steps 60 --checkpoint "$F" --resume "$F"
same_digest "a chain of 9 runs of 7 steps (checkpoint every 3) gives the same digest" chain "$DS"

echo "== d. Adam"
train d1 $ADAM --epochs 4 --max-steps 60
train d2 $ADAM --epochs 4 --max-steps 60
DA=$(digest d1)
same_digest "Adam: the same command twice gives the same digest" d2 "$DA"
check "Adam and SGD end differently" [ "$DA" != "$DS" ]
rm -f "$F"
train d3 $ADAM --epochs 4 --max-steps 33 --checkpoint "$F"
train d4 $ADAM --epochs 4 --max-steps 60 --checkpoint "$F" --resume "$F"
same_digest "Adam: stop at 33, resume to 60: same digest" d4 "$DA"
check "Adam: same train_loss" [ "$(json_num "$TMP/d4.json" train_loss)" = "$(json_num "$TMP/d1.json" train_loss)" ]

echo "== e. epoch boundaries"
train e0 $SGD --epochs 2
DE=$(digest e0)
rm -f "$F"
train e1 $SGD --epochs 1 --checkpoint "$F"
train e2 $SGD --epochs 2 --checkpoint "$F" --resume "$F"
same_digest "checkpoint at the end of epoch 1 (--epochs 1), resume to epoch 2" e2 "$DE"
check "the same test accuracy as the unbroken run" \
    [ "$(json_num "$TMP/e2.json" test_accuracy)" = "$(json_num "$TMP/e0.json" test_accuracy)" ]
rm -f "$F"
train e3 $SGD --epochs 2 --max-steps 16 --checkpoint "$F"
train e4 $SGD --epochs 2 --resume "$F"
same_digest "stop at step 16 (the epoch's last), resume to epoch 2" e4 "$DE"
rm -f "$F"
train e5 $SGD --epochs 2 --max-steps 15 --checkpoint "$F"
train e6 $SGD --epochs 2 --resume "$F"
same_digest "stop at step 15 (before the partial batch), resume to epoch 2" e6 "$DE"
rm -f "$F"
train e7 $SGD --epochs 2 --checkpoint "$F" --checkpoint-every 16 --max-steps 17
train e8 $SGD --epochs 2 --resume "$F"
same_digest "stop at step 17 (first of epoch 2), resume" e8 "$DE"

echo "== c. SIGKILL at random moments"
# kill_chain NAME NET DATA REF_DIGEST REF_MS ARGS...: run, kill after a random delay in
# [REF_MS/20, REF_MS], check the checkpoint, resume; repeat until a run finishes (at most
# 8 rounds, the last unkilled); then compare the final digest.
nkills=0
nmidsave=0
kill_chain()
{
    _name=$1 _net=$2 _data=$3 _ref=$4 _ms=$5
    shift 5
    rm -f "$F" "$F".tmp.*
    _round=0
    _log=
    while :; do
        _round=$((_round + 1))
        if [ -f "$F" ]; then _res="--resume $F"; else _res=; fi
        "$DLU" train --net "$_net" --data "$_data" "$@" --checkpoint "$F" --checkpoint-every 5 $_res \
            --json "$TMP/$_name.json" >"$STDOUT" 2>"$STDERR" &
        _pid=$!
        BG_PIDS=$_pid
        if [ $_round -lt 8 ]; then
            _d=$((_ms / 20 + $(rand_below $((_ms - _ms / 20 + 1)))))
            sleep "$((_d / 1000)).$(printf '%03d' $((_d % 1000)))"
            kill -KILL "$_pid" 2>/dev/null
        fi
        wait "$_pid" 2>/dev/null # no "Killed" notice from the shell
        _rc=$?
        BG_PIDS=
        if [ "$_rc" -eq 0 ]; then
            _log="$_log finished"
            break
        fi
        if [ "$_rc" -ne 137 ]; then
            fail "$_name round $_round: exit $_rc (neither finished nor killed)"
            dump_output
            return
        fi
        nkills=$((nkills + 1))
        _log="$_log killed@${_d}ms"
        if ls "$F".tmp.* >/dev/null 2>&1; then
            nmidsave=$((nmidsave + 1))
            _log="$_log(mid-save)"
            rm -f "$F".tmp.*
        fi
        if [ ! -f "$F" ]; then
            _log="$_log(no checkpoint yet)"
        else
            run_cmd "$DLU" eval --net "$_net" --data "$_data" --weights "$F"
            if [ "$rc" -ne 0 ]; then
                fail "$_name round $_round: the checkpoint left by the kill does not load"
                dump_output
                return
            fi
        fi
    done
    same_digest "$_name:$_log -> same digest" "$_name" "$_ref"
}

# A reference run with the same checkpointing, timed, for the digest and the kill window.
timed_ref()
{
    _t0=$(now_ms)
    rm -f "$F"
    "$DLU" train "$@" --checkpoint "$F" --checkpoint-every 5 >"$STDOUT" 2>"$STDERR"
    _rc=$?
    REF_MS=$(($(now_ms) - _t0))
    [ "$_rc" -eq 0 ] || { fail "reference run: exit $_rc"; dump_output; }
    [ "$REF_MS" -ge 50 ] || REF_MS=50
}

# mlp, 24 epochs (384 steps, 76 checkpoints): many kills land inside a checkpoint write.
timed_ref --net "$MLP" --data "$D" $SGD --epochs 24 --json "$TMP/cref.json"
DK=$(digest cref)
check "SIGKILL reference: an unbroken mlp run with checkpoints every 5 steps (${REF_MS} ms)" [ "${#DK}" -eq 64 ]
i=1
while [ $i -le "$KILL_TRIES" ]; do
    kill_chain "mlp-sgd-$i" "$MLP" "$D" "$DK" "$REF_MS" $SGD --epochs 24
    i=$((i + 1))
done
timed_ref --net "$MLP" --data "$D" $ADAM --epochs 24 --json "$TMP/cref-adam.json"
DKA=$(digest cref-adam)
check "SIGKILL reference: an unbroken mlp Adam run (${REF_MS} ms)" [ "${#DKA}" -eq 64 ]
kill_chain "mlp-adam" "$MLP" "$D" "$DKA" "$REF_MS" $ADAM --epochs 24
# cnn on 128 samples, batch 16: fewer, slower steps and bigger checkpoints.
CNNARGS="--batch 16 --seed 7 --lr 0.01 --threads 2 --quiet --epochs 4"
timed_ref --net "$CNN" --data "$TMP/small" $CNNARGS --json "$TMP/cref-cnn.json"
DKC=$(digest cref-cnn)
check "SIGKILL reference: an unbroken cnn run (${REF_MS} ms)" [ "${#DKC}" -eq 64 ]
kill_chain "cnn-sgd" "$CNN" "$TMP/small" "$DKC" "$REF_MS" $CNNARGS
echo "   $nkills kills, $nmidsave of them during a checkpoint write (a temp file was left behind)"

finish
