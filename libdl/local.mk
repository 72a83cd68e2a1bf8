# libdl/local.mk -- libdlu: tensors, numerics, ops, nets, optimizers, data, checkpoints.
lib_LTLIBRARIES += libdlu.la

dluincludedir = $(includedir)/dlu
dluinclude_HEADERS = \
	include/dlu/backend.h \
	include/dlu/data.h \
	include/dlu/formats.def \
	include/dlu/net.h \
	include/dlu/numerics.h \
	include/dlu/ops.def \
	include/dlu/optim.h \
	include/dlu/precision.h \
	include/dlu/scale.h \
	include/dlu/status.def \
	include/dlu/status.h \
	include/dlu/tensor.h \
	include/dlu/train.h

libdlu_la_SOURCES = \
	libdl/backend.c \
	libdl/backend_impl.h \
	libdl/ckpt_file.c \
	libdl/ckpt_file.h \
	libdl/data_idx.c \
	libdl/error.c \
	libdl/error.h \
	libdl/hash.c \
	libdl/hash.h \
	libdl/net.c \
	libdl/net_impl.h \
	libdl/net_parse.c \
	libdl/optim.c \
	libdl/precision.c \
	libdl/scale.c \
	libdl/seed.h \
	libdl/tensor.c \
	libdl/train.c \
	libdl/backend/cpu/cpu.h \
	libdl/backend/cpu/cpu_backend.c \
	libdl/backend/cpu/cpu_dense.c \
	libdl/backend/cpu/cpu_dfp.c \
	libdl/backend/cpu/cpu_quant.c \
	libdl/backend/cpu/cpu_quant.h \
	libdl/backend/cpu/igemm.c \
	libdl/backend/cpu/igemm.h \
	libdl/backend/cpu/cpu_misc.c

# The cuda backend: its host code is C, its kernels CUDA C++ compiled by nvcc through
# libtool (scripts/nvcc-libtool.sh). Without the toolkit a stub says it is absent.
if HAVE_CUDA
libdlu_la_SOURCES += \
	libdl/backend/cuda/cuda_impl.h \
	libdl/backend/cuda/cuda_backend.c \
	libdl/backend/cuda/cuda_optim.cu \
	libdl/backend/cuda/cuda_data.cu \
	libdl/backend/cuda/cuda_fp32.cu \
	libdl/backend/cuda/cuda_quant.h \
	libdl/backend/cuda/cuda_quant.cu \
	libdl/backend/cuda/cuda_igemm.h \
	libdl/backend/cuda/cuda_igemm.cu \
	libdl/backend/cuda/cuda_dfp.cu
else
libdlu_la_SOURCES += libdl/backend/cuda/cuda_stub.c
endif
EXTRA_DIST += scripts/nvcc-libtool.sh

SUFFIXES = .cu
NVCC_FLAGS = -std=c++17 -O3 -fmad=false $(NVCC_GENCODE) -Xcompiler=-ffp-contract=off \
	-Xcompiler=-fvisibility=default --expt-relaxed-constexpr
.cu.o:
	$(AM_V_CC)$(NVCC) $(NVCC_FLAGS) $(DEFS) $(DEFAULT_INCLUDES) $(INCLUDES) $(AM_CPPFLAGS) $(CPPFLAGS) $(CUDA_CFLAGS) \
	  $(NVCCFLAGS) -c -o $@ $<
.cu.lo:
	$(AM_V_CC)$(LIBTOOL) $(AM_V_lt) --tag=CC --mode=compile $(SHELL) $(top_srcdir)/scripts/nvcc-libtool.sh \
	  $(NVCC) $(NVCC_FLAGS) $(DEFS) $(DEFAULT_INCLUDES) $(INCLUDES) $(AM_CPPFLAGS) $(CPPFLAGS) $(CUDA_CFLAGS) \
	  $(NVCCFLAGS) -c -o $@ $<

libdlu_la_CPPFLAGS = $(AM_CPPFLAGS) $(OPENBLAS_CFLAGS) $(GSL_CFLAGS) $(ZLIB_CFLAGS) $(INIH_CFLAGS) \
	$(JANSSON_CFLAGS) $(CRYPTO_CFLAGS) $(CUDA_CFLAGS)
libdlu_la_LIBADD = $(OPENBLAS_LIBS) $(GSL_LIBS) $(ZLIB_LIBS) $(INIH_LIBS) $(JANSSON_LIBS) $(CRYPTO_LIBS) \
	$(CUDA_LIBS) -lpthread -lm
libdlu_la_LDFLAGS = -version-info 0:0:0
