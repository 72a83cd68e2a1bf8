#!/bin/sh
# test_dfp_dlusim.sh -- every DFP kernel of the dlusim backend against test_dfp's naive
# integer reference, bit for bit (integers, exponents, statistics, gradients), on two
# hardware configs (two tilings). In dlusim the DFP GEMMs are computed by the SystemC model
# as the data moves through its memories, so this checks the model's verification mode
# kernel by kernel; test_dlusim.sh checks whole training runs.
# Skipped (77) when the build has no dlusim backend.
. "${top_srcdir:-$(dirname "$0")/..}/tests/lib.sh"
"$DLU" info 2>/dev/null | grep -q '^  dlusim  built in' || skip "this build has no dlusim backend (SystemC not found)"
T=$top_builddir/tests/test_dfp
[ -x "$T" ] || skip "$T is not built"
for cfg in dlu-small dlu-base; do
    if "$T" "dlusim:$top_srcdir/examples/hw/$cfg.ini" >"$TMP/$cfg.out" 2>&1; then
        pass "test_dfp on dlusim:$cfg.ini: $(grep -E '^ *asserts' "$TMP/$cfg.out" | tr -s ' ')"
    else
        fail "test_dfp on dlusim:$cfg.ini"
        grep -E 'FAIL|Test:.*FAILED|failed' "$TMP/$cfg.out" | head -20
    fi
done
finish
