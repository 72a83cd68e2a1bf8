#!/bin/sh
# test_quantize.sh -- `dlu quantize`: exact output bytes, the JSON report, --auto, the
# stochastic-rounding stream, and every bad command line or input file.
#
# Checked: (a) bytes for small inputs against values worked out by hand in the comments
# (ties to even, saturation, negatives, NaN, Inf, -0, subnormals, both ends of the
# exponent range, dfp8 and dfp16) and the counts of the JSON report; (b) '-' for standard
# input and output gives the same bytes, with the report on standard error; (c) --auto
# picks the exponent docs/numerics.md section 12 gives for crafted data, under several
# policies, and writes what --exp with that exponent writes; (d) stochastic rounding is a
# function of (seed, tensor id, step): the same triple gives the same bytes, another
# seed, id or step other bytes, every value lands on one of its two neighbours, and two
# known-answer bits from the Philox stream; (e) every error exits 2 (command line) or 1
# (input/output) with a message naming the problem, never a crash, and never leaves OUT
# half-written or a temporary file behind; OUT may be a device or a symbolic link.
# Inputs are made with python3 (struct.pack '<f'); without python3 the test skips.
# It does NOT check the numerics themselves beyond these cases (tests/test_numerics.c).

. "${top_srcdir:-$(dirname "$0")/..}/tests/lib.sh"
[ -x "$DLU" ] || skip "$DLU is not built (run make first)"
command -v python3 >/dev/null 2>&1 || skip "python3 is needed to make float32 inputs"

Q="$DLU quantize"

# f32 FILE X...: write the numbers as little-endian float32 (nan, inf, -0.0 allowed).
f32()
{
    _f=$1
    shift
    python3 -c 'import struct, sys
v = [float(a) for a in sys.argv[2:]]
open(sys.argv[1], "wb").write(struct.pack("<%df" % len(v), *v))' "$_f" "$@"
}

# hexbytes FILE: the bytes as "00 7f ..." on one line.
hexbytes()
{
    od -An -tx1 -v "$1" | tr -s ' \n' '  ' | sed -e 's/^ *//' -e 's/ *$//'
}

# jget FILE KEY: a top-level value of the JSON report ("true"/"false" for booleans).
jget()
{
    python3 -c 'import json, sys
v = json.load(open(sys.argv[1]))[sys.argv[2]]
print(str(v).lower() if isinstance(v, bool) else v)' "$1" "$2" 2>/dev/null
}

# jhist FILE: the histogram as "k:count ...".
jhist()
{
    python3 -c 'import json, sys
print(" ".join("%d:%d" % (b["k"], b["count"]) for b in json.load(open(sys.argv[1]))["histogram"]))' "$1" 2>/dev/null
}

# differ A B: the files' contents differ.
differ()
{
    ! cmp -s "$1" "$2"
}

# expect_bytes DESC FILE HEX: FILE holds exactly the bytes HEX.
expect_bytes()
{
    _got=$(hexbytes "$2")
    if [ "$_got" = "$3" ]; then
        pass "$1: $3"
    else
        fail "$1: got '$_got', expected '$3'"
    fi
}

# expect_json DESC FILE KEY=VALUE...: the report's keys have these values.
expect_json()
{
    _d=$1
    _j=$2
    shift 2
    _bad=
    for _kv in "$@"; do
        _v=$(jget "$_j" "${_kv%%=*}")
        [ "$_v" = "${_kv#*=}" ] || _bad="$_bad ${_kv%%=*}=$_v (expected ${_kv#*=})"
    done
    if [ -z "$_bad" ]; then
        pass "$_d: $*"
    else
        fail "$_d:$_bad"
    fi
}

IN=$TMP/in.f32
OUT=$TMP/out.bin

echo "== exact bytes (a)"
# dfp8, e = 0: 0.5 -> 0 (tie, to even; underflow), 1.5 -> 2, 2.5 -> 2 (tie to even),
# -2.5 -> -2 (0xfe), 127.49 -> 127, 127.5 -> 128 -> 127 (saturated after rounding),
# 200 -> 127, -200 -> -127 (0x81: the range is symmetric), -0 -> 0 (zero), 3 -> 3,
# -0.5 -> 0 (underflow), 126.5 -> 126 (tie to even).
f32 "$IN" 0.5 1.5 2.5 -2.5 127.49 127.5 200 -200 -0.0 3 -0.5 126.5
expect_ok $Q --exp 0 "$IN" "$OUT"
cp "$STDOUT" "$TMP/r1.json"
expect_bytes "dfp8 e=0" "$OUT" "00 02 02 fe 7f 7f 7f 81 00 03 00 7e"
expect_json "dfp8 e=0 report" "$TMP/r1.json" exp=0 bits=8 format=dfp8 round=nearest auto=false count=12 \
    zeros=1 nan=0 overflow=3 underflow=2
# k = floor(log2|x|): 0.5,-0.5 -> -1; 1.5 -> 0; 2.5,-2.5,3 -> 1; 126.5,127.49,127.5 -> 6; 200,-200 -> 7
h=$(jhist "$TMP/r1.json")
check "histogram of the nonzero values: $h" [ "$h" = "-1:2 0:1 1:3 6:3 7:2" ]

# dfp8, e = -2 (LSB 0.25): 1.125 -> 4.5 -> 4, 1.375 -> 5.5 -> 6, -0.125 -> -0.5 -> 0,
# 31.75 -> 127, 31.875 -> 127.5 -> 127 (overflow), -32 -> -128 -> -127 (overflow).
f32 "$IN" 1.125 1.375 -0.125 31.75 31.875 -32
expect_ok $Q --exp -2 "$IN" "$OUT"
expect_bytes "dfp8 e=-2" "$OUT" "04 06 00 7f 7f 81"
expect_json "dfp8 e=-2 report" "$STDOUT" overflow=2 underflow=1 zeros=0

# dfp16, e = -8 (LSB 2^-8), little-endian int16: 1 -> 256 (00 01), -1.5 -> -384 (80 fe),
# 200 -> 51200 -> 32767 (ff 7f), 2^-9 -> 0.5 -> 0, 3 * 2^-9 -> 1.5 -> 2 (02 00),
# -32767/256 -> -32767 (01 80), NaN -> 0, +Inf -> 32767, -Inf -> -32767.
f32 "$IN" 1 -1.5 200 0.001953125 0.005859375 -127.99609375 nan inf -inf
expect_ok $Q --bits 16 --exp -8 "$IN" "$OUT"
expect_bytes "dfp16 e=-8" "$OUT" "00 01 80 fe ff 7f 00 00 02 00 01 80 00 00 ff 7f 01 80"
expect_json "dfp16 e=-8 report" "$STDOUT" bits=16 format=dfp16 count=9 nan=1 overflow=3 underflow=1 zeros=0

# Both ends of the valid range: 2^-149 (the smallest subnormal) at e = -149 -> 1, and
# FLT_MAX at e = 121 -> 127 (it is 2^128 - 2^104 > 127 * 2^121: overflow).
f32 "$IN" 1.401298464324817e-45 3.4028234663852886e38
expect_ok $Q --exp -149 "$IN" "$OUT"
expect_bytes "dfp8 e=-149" "$OUT" "01 7f"
expect_ok $Q --exp 121 "$IN" "$OUT"
expect_bytes "dfp8 e=121" "$OUT" "00 7f"
expect_json "dfp8 e=121 report" "$STDOUT" underflow=1 overflow=1
expect_ok $Q --bits 16 --exp 113 "$IN" "$OUT"
expect_bytes "dfp16 e=113" "$OUT" "00 00 ff 7f"

# Empty input: empty output, count 0.
: >"$IN"
expect_ok $Q --exp 0 "$IN" "$OUT"
check "empty input gives an empty output" [ -f "$OUT" -a ! -s "$OUT" ]
expect_json "empty input report" "$STDOUT" count=0

echo "== standard input and output (b)"
f32 "$IN" 0.5 1.5 2.5 -2.5 127.49 127.5 200 -200 -0.0 3 -0.5 126.5
"$DLU" quantize --exp 0 - - <"$IN" >"$TMP/o2.bin" 2>"$TMP/r2.json"
rc=$?
check "IN - OUT -: exit 0" [ "$rc" -eq 0 ]
expect_bytes "IN - OUT -" "$TMP/o2.bin" "00 02 02 fe 7f 7f 7f 81 00 03 00 7e"
expect_json "report on standard error" "$TMP/r2.json" exp=0 count=12 overflow=3
"$DLU" quantize --exp 0 "$IN" - >"$TMP/o3.bin" 2>"$TMP/r3.json"
check "IN file OUT -: same bytes" cmp -s "$TMP/o2.bin" "$TMP/o3.bin"
"$DLU" quantize --exp 0 - "$OUT" <"$IN" >"$TMP/r4.json" 2>"$STDERR"
check "IN - OUT file: same bytes" cmp -s "$TMP/o2.bin" "$OUT"
expect_json "report on standard output" "$TMP/r4.json" count=12
check "nothing on standard error" [ ! -s "$STDERR" ]

echo "== --auto (c)"
# 100 (k = 6), -3 (k = 1), 0.5 (k = -1), 0: the default policy (overflow, rate 1e-4 of
# n = 3 nonzero values allows none) is the max rule: e = (6 + 1) - (b - 1): 0 for dfp8,
# -8 for dfp16.
f32 "$IN" 100 -3 0.5 0
expect_ok $Q --auto "$IN" "$OUT"
expect_json "auto dfp8" "$STDOUT" exp=0 auto=true calibrated=true overflow=0 \
    "scale=overflow:rate=0.0001,interval=1,margin=0,hysteresis=1,emergency=0.01,recompute=0"
expect_bytes "auto dfp8 bytes" "$OUT" "64 fd 00 00"
expect_ok $Q --auto --bits 16 "$IN" "$OUT"
expect_json "auto dfp16" "$STDOUT" exp=-8
expect_ok $Q --auto --scale overflow:margin=2 "$IN" "$OUT"
expect_json "auto margin 2" "$STDOUT" exp=2

# 97 values 1.0 (k = 0) and 3 values 1024 (k = 10):
#   max: j = 11, e = 11 - 7 = 4;  overflow:rate=0.05 (allows 5 of 100): j = 1, e = -6;
#   percentile:p=97 (3 may saturate): e = -6;  percentile:p=98: e = 4.
python3 -c 'import struct
open("'"$IN"'", "wb").write(struct.pack("<100f", *([1.0] * 97 + [1024.0] * 3)))'
for case in "max 4" "overflow:rate=0.05 -6" "percentile:p=97 -6" "percentile:p=98 4" "amax 4" "autoflex 4" \
    "onebit:rate=0.05 -6"; do
    spec=${case% *}
    want=${case##* }
    expect_ok $Q --auto --scale "$spec" "$IN" "$OUT"
    expect_json "auto --scale $spec" "$STDOUT" exp="$want"
done
expect_ok $Q --auto --scale overflow:rate=0.05 "$IN" "$OUT"
expect_json "auto overflow:rate=0.05 saturates the 3 outliers" "$STDOUT" overflow=3
cp "$OUT" "$TMP/auto.bin"
expect_ok $Q --exp -6 "$IN" "$OUT"
check "--auto writes what --exp with its exponent writes" cmp -s "$OUT" "$TMP/auto.bin"
expect_ok $Q --auto --scale max "$IN" "$OUT"
expect_json "canonical scale in the report" "$STDOUT" \
    "scale=max:interval=1,margin=0,hysteresis=1,emergency=0.01,recompute=0"

# Nothing to calibrate on (zeros and NaNs): the initial exponent 2 - b, not calibrated.
f32 "$IN" 0 -0.0 nan
expect_ok $Q --auto "$IN" "$OUT"
expect_json "auto on zeros" "$STDOUT" exp=-6 calibrated=false zeros=2 nan=1
expect_ok $Q --auto --bits 16 "$IN" "$OUT"
expect_json "auto on zeros, dfp16" "$STDOUT" exp=-14

echo "== stochastic rounding (d)"
python3 -c 'import random, struct
r = random.Random(7)
v = [r.uniform(-6, 6) for _ in range(512)]
open("'"$IN"'", "wb").write(struct.pack("<512f", *v))'
S="--exp -3 --round stochastic"
expect_ok $Q $S --seed 5 --tensor-id 2 --step 3 "$IN" "$TMP/s1.bin"
expect_json "stochastic report" "$STDOUT" round=stochastic seed=5 tensor_id=2 step=3
expect_ok $Q $S --seed 5 --tensor-id 2 --step 3 "$IN" "$TMP/s2.bin"
check "same seed, id and step: same bytes" cmp -s "$TMP/s1.bin" "$TMP/s2.bin"
"$DLU" quantize $S --seed 5 --tensor-id 2 --step 3 - - <"$IN" >"$TMP/s3.bin" 2>/dev/null
check "same bytes through standard input and output" cmp -s "$TMP/s1.bin" "$TMP/s3.bin"
expect_ok $Q $S --seed 6 --tensor-id 2 --step 3 "$IN" "$TMP/s4.bin"
check "another seed: other bytes" differ "$TMP/s1.bin" "$TMP/s4.bin"
expect_ok $Q $S --seed 5 --tensor-id 3 --step 3 "$IN" "$TMP/s5.bin"
check "another tensor id: other bytes" differ "$TMP/s1.bin" "$TMP/s5.bin"
expect_ok $Q $S --seed 5 --tensor-id 2 --step 4 "$IN" "$TMP/s6.bin"
check "another step: other bytes" differ "$TMP/s1.bin" "$TMP/s6.bin"
# every q is floor or ceil of x * 2^3 (all |x| * 8 < 48: no saturation)
check "each value rounds to one of its two neighbours" python3 -c 'import math, struct
x = struct.unpack("<512f", open("'"$IN"'", "rb").read())
q = struct.unpack("<512b", open("'"$TMP/s1.bin"'", "rb").read())
assert all(math.floor(a * 8) <= b <= math.ceil(a * 8) for a, b in zip(x, q))
assert sum(b != round(a * 8) for a, b in zip(x, q)) > 0'
# nearest ignores the seed
expect_ok $Q --exp -3 --seed 1 "$IN" "$TMP/n1.bin"
expect_ok $Q --exp -3 --seed 2 "$IN" "$TMP/n2.bin"
check "nearest does not depend on the seed" cmp -s "$TMP/n1.bin" "$TMP/n2.bin"
# Known answer: element 0 under (seed 0, id 0, step 0) draws 0xe169c58d6627e8d5 and
# element 1 draws 0x9b00dbd8bc57ac4c (tests/test_numerics.c). 0.25 at e = 0 rounds up
# iff the draw is >= 0.75 * 2^64 = 0xc000...: element 0 up (1), element 1 down (0).
f32 "$IN" 0.25 0.25
expect_ok $Q --exp 0 --round stochastic "$IN" "$OUT"
expect_bytes "Philox known answer" "$OUT" "01 00"

echo "== command line errors (exit 2) (e)"
f32 "$IN" 1 2 3
rm -f "$OUT"
expect_fail 2 "expected IN and OUT" $Q --exp 0
expect_fail 2 "expected IN and OUT" $Q --exp 0 "$IN"
expect_fail 2 "unexpected argument 'extra'" $Q --exp 0 "$IN" "$OUT" extra
expect_fail 2 "--bits '12': expected 8 or 16" $Q --bits 12 --exp 0 "$IN" "$OUT"
expect_fail 2 "--bits 'x': expected 8 or 16" $Q --bits x --exp 0 "$IN" "$OUT"
expect_fail 2 "--bits '': expected 8 or 16" $Q --bits "" --exp 0 "$IN" "$OUT"
expect_fail 2 "--exp (for 8 bits) '122': expected an integer in [-149, 121]" $Q --exp 122 "$IN" "$OUT"
expect_fail 2 "--exp (for 16 bits) '114': expected an integer in [-149, 113]" $Q --bits 16 --exp 114 "$IN" "$OUT"
expect_fail 2 "--exp (for 8 bits) '-150'" $Q --exp -150 "$IN" "$OUT"
expect_fail 2 "--exp (for 8 bits) 'abc': expected an integer" $Q --exp abc "$IN" "$OUT"
expect_fail 2 "--exp (for 8 bits) '1.5'" $Q --exp 1.5 "$IN" "$OUT"
expect_fail 2 "--exp (for 8 bits) '99999999999999999999'" $Q --exp 99999999999999999999 "$IN" "$OUT"
expect_fail 2 "option '--exp' requires an argument" $Q "$IN" "$OUT" --exp
expect_fail 2 "--exp and --auto exclude each other" $Q --exp 0 --auto "$IN" "$OUT"
expect_fail 2 "one of --exp E or --auto is required" $Q "$IN" "$OUT"
expect_fail 2 "--round 'up': expected nearest or stochastic" $Q --exp 0 --round up "$IN" "$OUT"
expect_fail 2 "unknown policy 'foo' (valid policies: overflow, max, amax" $Q --auto --scale foo "$IN" "$OUT"
expect_fail 2 "rate '2' is out of range [0, 1)" $Q --auto --scale overflow:rate=2 "$IN" "$OUT"
expect_fail 2 "rate 'x' is not a number" $Q --auto --scale overflow:rate=x "$IN" "$OUT"
expect_fail 2 "unknown key 'bogus' (valid keys for overflow: rate," $Q --auto --scale overflow:bogus=1 "$IN" "$OUT"
expect_fail 2 "key 'rate' does not apply to policy max" $Q --auto --scale max:rate=0.1 "$IN" "$OUT"
expect_fail 2 "--scale 'max' needs --auto" $Q --exp 0 --scale max "$IN" "$OUT"
expect_fail 2 "--seed '-1': expected an integer in [0," $Q --exp 0 --seed -1 "$IN" "$OUT"
expect_fail 2 "--tensor-id '4294967296': expected an integer in [0, 4294967295]" \
    $Q --exp 0 --tensor-id 4294967296 "$IN" "$OUT"
expect_fail 2 "--step 'x': expected an integer" $Q --exp 0 --step x "$IN" "$OUT"
expect_fail 2 "unrecognized option '--frob'" $Q --frob --exp 0 "$IN" "$OUT"
check "no output file after command-line errors" [ ! -e "$OUT" ]
expect_ok $Q --help
check "--help shows the usage" grep -q "usage: dlu quantize" "$STDOUT"
check "dlu --help lists quantize" sh -c "'$DLU' --help | grep -q '^  quantize'"

echo "== input and output errors (exit 1) (e)"
W=$TMP/w
mkdir "$W"
printf 'KEEP' >"$W/out.bin"
expect_fail 1 "cannot open '$TMP/nope.f32': No such file or directory" $Q --exp 0 "$TMP/nope.f32" "$W/out.bin"
expect_fail 1 "cannot read '$TMP': Is a directory" $Q --exp 0 "$TMP" "$W/out.bin"
printf 'abcdefg' >"$TMP/seven.f32"
expect_fail 1 "'$TMP/seven.f32': 7 bytes is not a multiple of 4" $Q --exp 0 "$TMP/seven.f32" "$W/out.bin"
run_cmd sh -c "'$DLU' quantize --exp 0 - - <'$TMP/seven.f32'"
check "standard input of 7 bytes: exit 1" [ "$rc" -eq 1 ]
check "... message names standard input and the size" grep -qF "standard input: 7 bytes is not a multiple of 4" "$STDERR"
check "... nothing written to standard output" [ ! -s "$STDOUT" ]
check "OUT is untouched after input errors" [ "$(cat "$W/out.bin")" = KEEP ]
expect_fail 1 "cannot create '$TMP/nodir/out.bin'" $Q --exp 0 "$IN" "$TMP/nodir/out.bin"
mkdir "$W/adir"
expect_fail 1 "cannot write '$W/adir': Is a directory" $Q --exp 0 "$IN" "$W/adir"
check "no temporary file left behind" [ "$(ls "$W" | tr '\n' ' ')" = "adir out.bin " ]
if [ "$(id -u)" -ne 0 ]; then
    cp "$IN" "$TMP/locked.f32"
    chmod 000 "$TMP/locked.f32"
    expect_fail 1 "cannot open '$TMP/locked.f32': Permission denied" $Q --exp 0 "$TMP/locked.f32" "$W/out.bin"
    mkdir "$TMP/ro"
    chmod 555 "$TMP/ro"
    expect_fail 1 "cannot create '$TMP/ro/out.bin'" $Q --exp 0 "$IN" "$TMP/ro/out.bin"
    chmod 755 "$TMP/ro"
else
    echo "(running as root: permission cases skipped)"
fi
if [ -w /dev/full ]; then
    run_cmd sh -c "'$DLU' quantize --exp 0 '$IN' - >/dev/full"
    check "standard output full: exit 1" [ "$rc" -eq 1 ]
    check "... message says so" grep -qF "writing standard output: No space left on device" "$STDERR"
fi
# Devices are written, never replaced; symbolic links are followed, not replaced.
expect_ok $Q --exp 0 "$IN" /dev/null
check "/dev/null is still a character device" [ -c /dev/null ]
printf 'OLD!' >"$W/target.bin"
ln -s target.bin "$W/link.bin"
expect_ok $Q --exp 0 "$IN" "$W/link.bin"
check "a symbolic link OUT stays a link" [ -L "$W/link.bin" ]
expect_bytes "... and its target gets the bytes" "$W/target.bin" "01 02 03"
# A new OUT gets the usual permissions (umask), not the temporary file's 0600.
(umask 022 && "$DLU" quantize --exp 0 "$IN" "$W/perm.bin" >/dev/null)
perm=$(ls -l "$W/perm.bin" | cut -c1-10)
check "new OUT is -rw-r--r-- under umask 022 ($perm)" [ "$perm" = "-rw-r--r--" ]

finish
