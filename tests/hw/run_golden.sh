#!/bin/sh
# run_golden.sh -- run the SystemC block testbenches and diff their output against the
# golden logs (simulated cycles and events only, so any change of timing shows up).
#
# Usage: run_golden.sh [TB_BINARY...]
#   Each argument is a testbench binary named tb_<block> (libtool wrappers are fine); its
#   output is compared with golden/<block>.log next to this script. Without arguments the
#   binaries tests/hw/tb_{hbm,noc,dma,dpu,master} under the current directory (the build
#   directory, where make check runs) are used.
#   DLU_GOLDEN_UPDATE=1 rewrites the goldens from the current output instead of comparing.
# Exit status: 0 when every log matches, 1 on a difference or a failing testbench.
# Not here: building the testbenches (tests/local.mk).
set -u
here=$(cd "$(dirname "$0")" && pwd)
SYSTEMC_DISABLE_COPYRIGHT_MESSAGE=1
export SYSTEMC_DISABLE_COPYRIGHT_MESSAGE
if [ $# -eq 0 ]; then
    set -- tests/hw/tb_hbm tests/hw/tb_noc tests/hw/tb_dma tests/hw/tb_dpu tests/hw/tb_master
fi
tmp=$(mktemp "${TMPDIR:-/tmp}/dlu_golden.XXXXXX") || exit 1
trap 'rm -f "$tmp"' EXIT
fail=0
for tb in "$@"; do
    name=$(basename "$tb")
    block=${name#tb_}
    golden="$here/golden/$block.log"
    if ! "$tb" >"$tmp" 2>&1; then
        echo "FAIL: $name exited with status $? (output below)"
        cat "$tmp"
        fail=1
        continue
    fi
    if [ "${DLU_GOLDEN_UPDATE:-0}" = 1 ]; then
        cp "$tmp" "$golden" && echo "UPDATED: $golden"
    elif diff -u "$golden" "$tmp"; then
        echo "PASS: $name matches golden/$block.log"
    else
        echo "FAIL: $name differs from golden/$block.log (diff above: - golden, + now)"
        fail=1
    fi
done
exit $fail
