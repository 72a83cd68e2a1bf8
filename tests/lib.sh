# lib.sh -- helpers shared by the shell tests (tests/test_*.sh); sourced, POSIX sh.
#
# Finds the programs under test through $top_builddir and $top_srcdir (exported by
# tests/local.mk; when unset, the folder above this script's caller, so that
# `sh tests/test_cli.sh` works by hand from the repository root), makes a private temp
# folder removed on exit, and counts checks: one "PASS: ..." or "FAIL: ..." line each and
# a final "N passed, N failed" line from finish, whose exit status is the test's.
# A test that lacks something it needs calls skip, which exits 77 (automake: SKIP).
# It is NOT a test framework: no fixtures beyond the temp folder, no parallelism.

: "${top_srcdir:=$(cd "$(dirname "$0")/.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
DLU=$top_builddir/dlu
MKIDX=$top_builddir/tests/mkidx
NETS=$top_srcdir/examples/nets

npass=0
nfail=0
rc=0
BG_PIDS=

skip()
{
    echo "SKIP: $*"
    exit 77
}

# Everything the test needs from the build; skip (77) when one is missing.
require_programs()
{
    [ -x "$DLU" ] || skip "$DLU is not built (run make first)"
    [ -x "$MKIDX" ] || skip "$MKIDX is not built (make tests/mkidx)"
    [ -r "$NETS/mlp.net" ] || skip "$NETS/mlp.net not found (set top_srcdir)"
}

cleanup()
{
    for _p in $BG_PIDS; do
        kill -KILL "$_p" 2>/dev/null
    done
    [ -n "${TMP:-}" ] && rm -rf "$TMP"
}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dlu-test-XXXXXX") || {
    echo "FAIL: cannot make a temp folder"
    exit 99
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
STDOUT=$TMP/.stdout
STDERR=$TMP/.stderr

# Shorten paths in reports.
show()
{
    printf '%s' "$*" | sed -e "s|$TMP|\$TMP|g" -e "s|$NETS/|nets/|g" -e "s|$top_builddir/||g"
}

pass()
{
    npass=$((npass + 1))
    echo "PASS: $(show "$*")"
}

fail()
{
    nfail=$((nfail + 1))
    echo "FAIL: $(show "$*")"
}

# Print the first lines of the last command's stderr and stdout, indented.
dump_output()
{
    if [ -s "$STDERR" ]; then
        echo "    stderr:"
        head -n 5 "$STDERR" | sed -e 's/^/      /'
    fi
    if [ -s "$STDOUT" ]; then
        echo "    stdout:"
        head -n 5 "$STDOUT" | sed -e 's/^/      /'
    fi
}

# run_cmd CMD...: run it, stdout and stderr to $STDOUT and $STDERR, status in $rc.
run_cmd()
{
    "$@" >"$STDOUT" 2>"$STDERR"
    rc=$?
}

# expect_fail CODE PHRASE CMD...: CMD must exit with CODE (never a signal), say something
# on stderr, and that must contain PHRASE (a fixed string).
expect_fail()
{
    _code=$1
    _phrase=$2
    shift 2
    run_cmd "$@"
    _why=
    if [ "$rc" -ge 128 ]; then
        _why="crashed: exit $rc (signal $((rc - 128)))"
    elif [ "$rc" -ne "$_code" ]; then
        _why="exit $rc, expected $_code"
    elif [ ! -s "$STDERR" ]; then
        _why="nothing on stderr"
    elif ! grep -qF -- "$_phrase" "$STDERR"; then
        _why="stderr lacks \"$_phrase\""
    fi
    if [ -z "$_why" ]; then
        pass "[exit $_code] $*"
    else
        fail "[$_why] $*"
        dump_output
    fi
}

# expect_ok CMD...: CMD must exit 0.
expect_ok()
{
    run_cmd "$@"
    if [ "$rc" -eq 0 ]; then
        pass "[exit 0] $*"
    else
        fail "[exit $rc, expected 0] $*"
        dump_output
    fi
}

# check DESCRIPTION CMD...: a check that passes when CMD (e.g. a `[ ... ]` test) succeeds.
check()
{
    _desc=$1
    shift
    if "$@"; then
        pass "$_desc"
    else
        fail "$_desc"
    fi
}

# json_str FILE KEY: the string value of "KEY" in a JSON file written by dlu (one key per line).
json_str()
{
    sed -n "s/^ *\"$2\": *\"\\([^\"]*\\)\".*/\\1/p" "$1" 2>/dev/null | head -n 1
}

# json_num FILE KEY: the number value of "KEY".
json_num()
{
    sed -n "s/^ *\"$2\": *\\([-0-9.eE+]*\\).*/\\1/p" "$1" 2>/dev/null | head -n 1
}

# flip_byte FILE OFFSET: invert the byte at OFFSET in place.
flip_byte()
{
    _b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
    printf "\\$(printf '%03o' $((255 - _b)))" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null
}

# file_size FILE: bytes.
file_size()
{
    wc -c <"$1" | tr -d ' '
}

# rand_below N: a pseudo-random integer in [0, N), from /dev/urandom.
rand_below()
{
    _r=$(od -An -tu4 -N4 /dev/urandom | tr -d ' ')
    echo $((_r % $1))
}

# now_ms: wall clock in milliseconds (GNU date).
now_ms()
{
    date +%s%3N
}

finish()
{
    echo "$npass passed, $nfail failed"
    [ "$nfail" -eq 0 ]
    exit $?
}
