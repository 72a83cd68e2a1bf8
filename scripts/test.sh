#!/bin/sh
# test.sh -- install what is missing, build, and run the full test suite (make check),
# then make distcheck (a clean build from the release tarball). GPU tests SKIP (exit 77)
# on machines without a GPU.
set -eu
cd "$(dirname "$0")/.."
DLU_CONFIGURE_FLAGS="${DLU_CONFIGURE_FLAGS:---enable-werror}" ./scripts/bootstrap.sh
jobs=$(nproc 2>/dev/null || echo 2)
status=0
make -j"$jobs" check || status=$?
if [ "$status" -ne 0 ]; then
    for f in tests/*.log; do
        case "$f" in tests/test-suite.log) continue ;; esac
        grep -q '^FAIL\|^ERROR' "${f%.log}.trs" 2>/dev/null && { echo "==== $f"; tail -40 "$f"; }
    done
    exit "$status"
fi
if [ "${DLU_SKIP_DISTCHECK:-0}" != 1 ]; then
    make -j"$jobs" distcheck DISTCHECK_CONFIGURE_FLAGS=--enable-werror
fi
