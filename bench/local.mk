# bench/local.mk -- benchmarks: built by `make bench`, run by hand (never timed in tests).
EXTRA_DIST += bench/train_cuda.sh bench/train_cpu.sh bench/sim_speed.sh bench/peers/setup_venv.sh bench/peers/torch_train.py bench/bitwidth.py bench/bitwidth.md

EXTRA_PROGRAMS = bench/igemm_bench
bench_igemm_bench_SOURCES = bench/igemm_bench.c
bench_igemm_bench_CPPFLAGS = $(AM_CPPFLAGS) $(OPENBLAS_CFLAGS)
bench_igemm_bench_LDADD = libdlu.la $(OPENBLAS_LIBS) -lpthread
if HAVE_CUDA
EXTRA_PROGRAMS += bench/cuda_gemm
bench_cuda_gemm_SOURCES = bench/cuda_gemm.cu
bench_cuda_gemm_LDADD = libdlu.la $(CUDA_LIBS)
endif
EXTRA_DIST += bench/cuda_gemm.cu
CLEANFILES += $(EXTRA_PROGRAMS)

.PHONY: bench
bench: $(EXTRA_PROGRAMS) dlu
