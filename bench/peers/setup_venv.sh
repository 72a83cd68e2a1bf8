#!/usr/bin/env bash
# Create (idempotently) the Python venv used by the CPU peers of the
# benchmarks: CPU-only use of PyTorch (eager) and QPyTorch (qtorch).
#
#   bench/peers/setup_venv.sh            # venv at <repo>/.venv-bench
#   VENV=/some/dir bench/peers/setup_venv.sh
#
# Environment knobs:
#   VENV           venv directory (default <repo>/.venv-bench, git-ignored)
#   PYTHON         interpreter used to create the venv (default python3)
#   TORCH_VERSION  torch version from PyPI (default 2.15.0)
#   QTORCH_VERSION qtorch version from PyPI (default 0.3.0)
#
# Why it is done this way
# -----------------------
# Only PyPI and Debian are reachable (no download.pytorch.org, so no "+cpu"
# wheel).  PyPI's Linux x86_64 torch wheel is a CUDA build: a plain
# `pip install torch` pulls several GB of nvidia-* packages.  Installing it
# with --no-deps is not enough either: libtorch_cuda.so / libtorch_python.so
# are hard-linked (DT_NEEDED) against libcublas, libcudnn, libnccl, ... so
# `import torch` fails with e.g. "libcufile.so.0: cannot open shared object".
#
# What we do instead (about 0.6 GB download, almost all of it the torch wheel):
#   1. pip install --no-deps torch==$TORCH_VERSION, plus its pure-python deps
#      (filelock typing-extensions sympy networkx jinja2 fsspec setuptools).
#   2. the two small real CUDA runtime pieces it needs at import time
#      (nvidia-cuda-runtime: libcudart, 2 MB; nvidia-cuda-cupti: 12 MB), so
#      that torch.cuda.is_available() answers False the normal way.
#   3. for every other CUDA library that torch's .so files need (cublas,
#      cublasLt, cudnn, cufft, cufile, cusparse, cusparseLt, cusolver, nccl,
#      nvrtc, nvshmem_host, ...) a tiny generated *stub* shared library with
#      the right SONAME, symbol version node and every symbol torch imports
#      from it.  Each stub function aborts with a message if it is ever
#      called; on the CPU none of them is.  The stubs live in
#      site-packages/nvidia/cu13/lib, which is in torch's DT_RPATH, so they
#      take precedence over any system CUDA install and nothing needs
#      LD_LIBRARY_PATH.  libcuda.so.1 (the driver) is deliberately NOT
#      stubbed: without it, CUDA is simply "not available".
#   4. numpy, ninja and qtorch (--no-deps: its only dependency is torch).
#      qtorch compiles its C++ CPU kernels with torch.utils.cpp_extension on
#      first import (needs g++ and Python.h); we do that once here, with
#      TORCH_EXTENSIONS_DIR=$VENV/torch_extensions (torch_train.py uses the
#      same directory), and check block_quantize on a CPU tensor.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
VENV="${VENV:-$repo/.venv-bench}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.15.0}"
QTORCH_VERSION="${QTORCH_VERSION:-0.3.0}"

log() { printf '[setup_venv] %s\n' "$*" >&2; }

# --- prerequisites --------------------------------------------------------
command -v "$PYTHON" >/dev/null || { log "no $PYTHON"; exit 1; }
command -v g++ >/dev/null || { log "g++ is needed (apt-get install g++)"; exit 1; }
command -v gcc >/dev/null || { log "gcc is needed (apt-get install gcc)"; exit 1; }
command -v readelf >/dev/null || { log "readelf is needed (apt-get install binutils)"; exit 1; }
pyinc="$("$PYTHON" -c 'import sysconfig;print(sysconfig.get_paths()["include"])')"
if [ ! -f "$pyinc/Python.h" ]; then
    log "Python.h not found in $pyinc: install the headers of $PYTHON (e.g. apt-get install python3-dev)"
    exit 1
fi

# --- venv ------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    log "creating venv $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
else
    log "reusing venv $VENV"
fi
py="$VENV/bin/python"
pip=("$py" -m pip install --disable-pip-version-check --no-input)

# pure-python deps of torch (its CUDA deps are replaced by stubs, see above)
"${pip[@]}" -q 'setuptools>=77.0.3' filelock 'typing-extensions>=4.13.0' \
    'sympy>=1.13.3' 'networkx>=2.5.1' jinja2 'fsspec>=0.8.5' numpy ninja
log "installing torch==$TORCH_VERSION without its CUDA dependencies"
"${pip[@]}" -q --no-deps "torch==$TORCH_VERSION"

# CUDA version torch was built against -> matching small runtime packages.
cuda_ver="$("$py" - <<'EOF'
import importlib.metadata as m, re
for r in m.requires("torch") or []:
    mo = re.match(r"cuda-toolkit\[.*\]==([0-9.]+)", r.replace(" ", ""))
    if mo:
        print(mo.group(1)); break
EOF
)"
if [ -n "$cuda_ver" ]; then
    # cuda-toolkit 13.2.2 -> nvidia-cuda-runtime 13.2.*
    mm="$(echo "$cuda_ver" | cut -d. -f1,2)"
    log "torch built against CUDA $cuda_ver: installing nvidia-cuda-runtime/cupti $mm.*"
    "${pip[@]}" -q --no-deps "nvidia-cuda-runtime==$mm.*" "nvidia-cuda-cupti==$mm.*"
else
    log "could not tell torch's CUDA version; relying on stubs only"
fi

# --- stubs for the CUDA libraries torch links against ----------------------
"$py" - <<'EOF'
import glob, os, re, subprocess, sys, sysconfig, tempfile

site = sysconfig.get_paths()["purelib"]
tlib = os.path.join(site, "torch", "lib")
objs = sorted(glob.glob(os.path.join(tlib, "*.so*")) +
              glob.glob(os.path.join(site, "torch", "_C*.so")))
nv_dirs = sorted(glob.glob(os.path.join(site, "nvidia", "*", "lib")))
stub_dir = os.path.join(site, "nvidia", "cu13", "lib")   # in torch's RPATH
rpath_dirs = set()

def sh(*a):
    return subprocess.run(a, check=True, capture_output=True, text=True).stdout

def needed(f):
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", sh("readelf", "-dW", f))

def rpaths(f):
    m = re.search(r"\((?:RPATH|RUNPATH)\)\s+Library r\w*path: \[(.+?)\]", sh("readelf", "-dW", f))
    return m.group(1).split(":") if m else []

def verneed(f):
    """version tag -> soname that must define it (from .gnu.version_r)"""
    out, cur = {}, None
    for line in sh("readelf", "-V", "-W", f).splitlines():
        m = re.search(r"Version: \d+\s+File: (\S+)", line)
        if m:
            cur = m.group(1); continue
        m = re.search(r"Name: (\S+)\s+Flags", line)
        if m and cur:
            out[m.group(1)] = cur
    return out

def dynsyms(f):
    """(defined, undefined) dynamic symbols; undefined: name -> (type, bind, vertag)"""
    defined, undef = set(), {}
    for line in sh("readelf", "--dyn-syms", "-W", f).splitlines():
        p = line.split()
        if len(p) < 8 or not p[0].endswith(":"):
            continue
        typ, bind, ndx, name = p[3], p[4], p[6], p[7]
        tag = None
        if "@" in name:
            name, _, tag = name.partition("@")
            tag = tag.lstrip("@")
        if ndx == "UND":
            if name and bind != "WEAK":
                undef[name] = (typ, tag)
        else:
            defined.add(name)
    return defined, undef

# libraries that come with the system: never stubbed
system = {"libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1",
          "libstdc++.so.6", "libgcc_s.so.1", "ld-linux-x86-64.so.2",
          "libutil.so.1", "libz.so.1", "libquadmath.so.0"}
never_stub = {"libcuda.so.1"}  # the driver: its absence means "no CUDA"

bundled = {os.path.basename(o) for o in objs}
have_real = {}
for d in nv_dirs:
    for f in glob.glob(os.path.join(d, "*.so*")):
        if os.path.isfile(f) and not os.path.islink(f):
            # a file written by us earlier is a stub, not a real library
            if open(f, "rb").read().find(b"opendlu-cuda-stub") >= 0:
                continue
            have_real[os.path.basename(f)] = f

need = {}
for o in objs:
    need[o] = needed(o)
all_needed = {n for ns in need.values() for n in ns}
missing = sorted(n for n in all_needed
                 if n not in system and n not in bundled and n not in have_real
                 and n not in never_stub)

# every symbol some library in the set (or the system) already defines
defined = set()
for f in objs + list(have_real.values()):
    defined |= dynsyms(f)[0]
libc_paths = set(re.findall(r"=> (/\S+)", sh("ldd", os.path.join(tlib, "libtorch_cpu.so"))))
for f in libc_paths:
    if os.path.basename(f) in system:
        defined |= dynsyms(f)[0]
# the Python C API (interpreter or libpython)
defined |= dynsyms(os.path.realpath(sys.executable))[0]
libpy = os.path.join(sysconfig.get_config_var("LIBDIR") or "", sysconfig.get_config_var("LDLIBRARY") or "")
if libpy.endswith(".so") or ".so." in libpy:
    if os.path.isfile(libpy):
        defined |= dynsyms(libpy)[0]

# symbols each stub must provide
want = {m: {} for m in missing}   # soname -> {symbol: (type, version tag)}
vers = {m: set() for m in missing}  # soname -> version nodes it must define
for o in objs:
    o_missing = [n for n in need[o] if n in want]
    tag2so = verneed(o)
    for tag, so in tag2so.items():
        if so in want:
            vers[so].add(tag)
    for name, (typ, tag) in dynsyms(o)[1].items():
        if name in defined:
            continue
        so = tag2so.get(tag) if tag else None
        if so in want:
            want[so][name] = (typ, tag)
        elif tag is None and o_missing:
            want[o_missing[0]].setdefault(name, (typ, None))

os.makedirs(stub_dir, exist_ok=True)
with tempfile.TemporaryDirectory() as tmp:
    for soname in missing:
        syms = want[soname]
        src = ['#include <stdio.h>', '#include <stdlib.h>',
               'const char opendlu_stub_marker[] = "opendlu-cuda-stub %s";' % soname,
               'static void die(const char *s) {',
               '  fprintf(stderr, "opendlu: %%s (from stub %s) was called: this venv has a '
               'CPU-only torch without CUDA libraries\\n", s);' % soname,
               '  abort(); }']
        for i, (name, (typ, _)) in enumerate(sorted(syms.items())):
            if typ == "OBJECT":
                src.append('char o%d[256] __asm__("%s");' % (i, name))
            elif typ == "TLS":
                src.append('__thread char t%d[64] __asm__("%s");' % (i, name))
            else:
                src.append('void f%d(void) __asm__("%s");' % (i, name))
                src.append('void f%d(void) { die("%s"); }' % (i, name))
        c = os.path.join(tmp, "stub.c")
        open(c, "w").write("\n".join(src) + "\n")
        cmd = ["gcc", "-shared", "-fPIC", "-O0", "-o", os.path.join(stub_dir, soname),
               c, "-Wl,-soname," + soname]
        if vers[soname]:
            # every node exports the symbols torch asks for with that tag;
            # the last (unversioned) ones go to the first node
            tags = sorted(vers[soname])
            v = os.path.join(tmp, "stub.map")
            with open(v, "w") as fm:
                for t in tags:
                    names = sorted(n for n, (_, g) in syms.items() if g == t)
                    if t == tags[0]:
                        names += sorted(n for n, (_, g) in syms.items() if g is None)
                    body = "".join(' "%s";' % n for n in names)
                    glob_ = " global:%s" % body if body else ""
                    loc = " local: *;" if t == tags[0] else ""
                    fm.write("%s {%s%s };\n" % (t, glob_, loc))
            cmd.append("-Wl,--version-script=" + v)
        subprocess.run(cmd, check=True)
        print("[setup_venv] stub %-22s %4d symbols%s" % (
            soname, len(syms), " (versions: %s)" % " ".join(sorted(vers[soname]))
            if vers[soname] else ""), file=sys.stderr)
EOF

"${pip[@]}" -q --no-deps "qtorch==$QTORCH_VERSION"

# --- verify ----------------------------------------------------------------
log "verifying (first import of qtorch compiles its C++ CPU kernels, ~1 min)"
mkdir -p "$VENV/torch_extensions"
PATH="$VENV/bin:$PATH" TORCH_EXTENSIONS_DIR="$VENV/torch_extensions" "$py" - <<'EOF'
import importlib.metadata as m, platform
import torch, numpy
assert not torch.cuda.is_available()
a = torch.randn(64, 32, requires_grad=True)
w = torch.nn.Linear(32, 8)
y = torch.nn.functional.conv2d(torch.randn(2, 1, 8, 8), torch.randn(4, 1, 3, 3), padding=1)
w(a).relu().sum().backward()
assert a.grad is not None and y.shape == (2, 4, 8, 8)
from qtorch import BlockFloatingPoint
from qtorch.quant import block_quantize, Quantizer
x = torch.randn(1000)
q = block_quantize(x, wl=8, dim=-1, rounding="nearest")
qs = block_quantize(x, wl=8, dim=-1, rounding="stochastic")
# one exponent for the tensor: values are multiples of 2^(e_max - wl + 2)
e = int(torch.floor(torch.log2(x.abs().max())))
step = 2.0 ** (e - 8 + 2)
assert torch.allclose(q / step, torch.round(q / step)), "not on the bfp8 grid"
assert (q - x).abs().max() <= step / 2 + 1e-6 and (qs - x).abs().max() <= step + 1e-6
qz = Quantizer(BlockFloatingPoint(wl=8), BlockFloatingPoint(wl=8), "nearest", "stochastic")
t = torch.randn(4, 5, requires_grad=True); qz(t).sum().backward()
print("python", platform.python_version())
for p in ["torch", "qtorch", "numpy", "ninja", "nvidia-cuda-runtime", "nvidia-cuda-cupti",
          "sympy", "networkx", "filelock", "jinja2", "fsspec", "typing_extensions", "setuptools"]:
    try:
        print(f"{p} {m.version(p)}")
    except m.PackageNotFoundError:
        print(f"{p} (not installed)")
print(f"torch threads={torch.get_num_threads()} cuda_available={torch.cuda.is_available()}"
      f" mkldnn={torch.backends.mkldnn.is_available()} mkl={torch.backends.mkl.is_available()}")
print(f"qtorch block_quantize ok: max|x-q_bfp8| = {float((q - x).abs().max()):.4g} (step {step:g})")
EOF
log "venv ready: $VENV (size $(du -sh "$VENV" | cut -f1))"
