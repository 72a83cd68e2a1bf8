#!/bin/sh
# device_prep.sh -- get .carry/ ready for a run on a lent GPU machine (docs/cuda.md).
#
# That machine has the CUDA toolkit, a driver and PyTorch, but none of our Debian
# libraries and no network. This builds dlu, the GPU tests and the GPU benchmarks here
# (a separate build in _build/device/src, libdlu linked in statically, the cuda backend
# in, SystemC out), downloads the Debian packages of the shared libraries they load, and
# copies the Fashion-MNIST IDX files, all into the ignored folder .carry/:
#   .carry/build/{dlu,tests/test_dfp,tests/test_ops,tests/mkidx,bench/cuda_gemm}
#   .carry/debs/*.deb    unpacked there by scripts/device_run.sh
#   .carry/data/*.gz     the data set
# Then call the device tool with carry [".carry"] and `sh scripts/device_run.sh`.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
# A copy of the tracked files as they are now (a configured source tree cannot also host
# a separate build), configured for the device and built.
src=_build/device/src
mkdir -p "$src"
git ls-files -z | xargs -0 cp --parents -t "$src"
(
    cd "$src"
    [ -x configure ] || autoreconf -fi >/dev/null 2>&1
    # static libdlu: libtool drops -lm and -lstdc++ from its dependencies, so name them
    [ -f Makefile ] || ./configure --disable-shared --with-cuda --without-systemc --without-mpi LIBS="-lstdc++ -lm" >/dev/null
    make -j2 dlu tests/test_dfp tests/test_ops tests/mkidx bench/cuda_gemm >/dev/null
)
rm -rf .carry
mkdir -p .carry/build/tests .carry/build/bench .carry/debs .carry/data
cp $src/dlu .carry/build/
cp $src/tests/test_dfp $src/tests/test_ops $src/tests/mkidx .carry/build/tests/
cp $src/bench/cuda_gemm .carry/build/bench/
# The packages that hold the shared libraries the programs load, except the C library,
# the C++ runtime and CUDA's own (the GPU machine has those).
libs=$(ldd .carry/build/dlu .carry/build/tests/* .carry/build/bench/* 2>/dev/null | awk '/=> \//{print $3}' | sort -u |
    grep -v -E '/(libc|libm|libdl|librt|libpthread|ld-linux[^/]*|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt)\.so')
pkgs=$(for l in $libs; do dpkg -S "$(readlink -f "$l")" 2>/dev/null || dpkg -S "$l"; done | cut -d: -f1 | sort -u)
(cd .carry/debs && apt-get download $pkgs >/dev/null)
cp /usr/share/datasets/fashion-mnist/*.gz .carry/data/
echo "carry: .carry ($(du -sh .carry | cut -f1)); packages: $(echo $pkgs | tr '\n' ' ')"
