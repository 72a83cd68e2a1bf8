#!/bin/sh
# nvcc-libtool.sh -- run nvcc with the arguments libtool gives a C compiler.
# libtool (--mode=compile) adds host-compiler options that nvcc does not take itself;
# this passes them through -Xcompiler and everything else unchanged. Usage (Makefile):
#   $(LIBTOOL) --tag=CC --mode=compile $(SHELL) scripts/nvcc-libtool.sh $(NVCC) ... -c foo.cu
nvcc=$1
shift
for a in "$@"; do
    shift
    case $a in
    -fPIC | -fpic | -fno-common) set -- "$@" "-Xcompiler=$a" ;;
    *) set -- "$@" "$a" ;;
    esac
done
exec "$nvcc" "$@"
