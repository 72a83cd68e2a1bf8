# tests/local.mk -- CUnit programs and shell tests, all run by `make check`.
AM_TESTS_ENVIRONMENT = top_builddir='$(abs_top_builddir)'; top_srcdir='$(abs_top_srcdir)'; \
	export top_builddir top_srcdir;
TEST_EXTENSIONS = .sh
SH_LOG_COMPILER = $(SHELL)

check_PROGRAMS += tests/test_data tests/test_ckpt tests/test_ops tests/test_net tests/test_numerics
TESTS += tests/test_data tests/test_ckpt tests/test_ops tests/test_net tests/test_numerics \
	tests/test_cli.sh tests/test_resume.sh

tests_cflags = $(AM_CPPFLAGS) $(CUNIT_CFLAGS) $(OPENBLAS_CFLAGS)
tests_ldadd = libdlu.la $(CUNIT_LIBS) $(OPENBLAS_LIBS) $(GSL_LIBS) -lm

tests_test_data_SOURCES = tests/test_data.c
tests_test_data_CPPFLAGS = $(tests_cflags)
tests_test_data_LDADD = $(tests_ldadd) $(ZLIB_LIBS)
tests_test_ckpt_SOURCES = tests/test_ckpt.c
tests_test_ckpt_CPPFLAGS = $(tests_cflags)
tests_test_ckpt_LDADD = $(tests_ldadd) $(CRYPTO_LIBS)
tests_test_ops_SOURCES = tests/test_ops.c
tests_test_ops_CPPFLAGS = $(tests_cflags)
tests_test_ops_LDADD = $(tests_ldadd)
tests_test_net_SOURCES = tests/test_net.c
tests_test_net_CPPFLAGS = $(tests_cflags)
tests_test_net_LDADD = $(tests_ldadd)

EXTRA_DIST += tests/test_cli.sh tests/test_resume.sh tests/lib.sh

# mkidx: writes small synthetic IDX data sets for the shell tests
check_PROGRAMS += tests/mkidx
tests_mkidx_SOURCES = tests/mkidx.c
tests_mkidx_CPPFLAGS = $(AM_CPPFLAGS) $(ZLIB_CFLAGS)
tests_mkidx_LDADD = $(ZLIB_LIBS)
tests_test_numerics_SOURCES = tests/test_numerics.c
tests_test_numerics_CPPFLAGS = $(tests_cflags)
tests_test_numerics_LDADD = $(CUNIT_LIBS) -lm

EXTRA_DIST += tests/vectors/gen_quant.c tests/vectors/quant_f32.txt tests/vectors/requant_acc.txt \
	tests/vectors/bias_acc.txt tests/vectors/stats.txt tests/vectors/explog.txt tests/vectors/softmax.txt

check_PROGRAMS += tests/test_scale
TESTS += tests/test_scale tests/test_quantize.sh
tests_test_scale_SOURCES = tests/test_scale.c
tests_test_scale_CPPFLAGS = $(tests_cflags)
tests_test_scale_LDADD = $(tests_ldadd)
EXTRA_DIST += tests/test_quantize.sh

check_PROGRAMS += tests/test_igemm
TESTS += tests/test_igemm
tests_test_igemm_SOURCES = tests/test_igemm.c
tests_test_igemm_CPPFLAGS = $(tests_cflags)
tests_test_igemm_LDADD = $(tests_ldadd) -lpthread

check_PROGRAMS += tests/test_dfp
TESTS += tests/test_dfp tests/test_dfp_train.sh
tests_test_dfp_SOURCES = tests/test_dfp.c
tests_test_dfp_CPPFLAGS = $(tests_cflags)
tests_test_dfp_LDADD = $(tests_ldadd)
EXTRA_DIST += tests/test_dfp_train.sh

check_PROGRAMS += tests/test_cpu_quant
TESTS += tests/test_cpu_quant
tests_test_cpu_quant_SOURCES = tests/test_cpu_quant.c
tests_test_cpu_quant_CPPFLAGS = $(tests_cflags)
tests_test_cpu_quant_LDADD = $(tests_ldadd)

# the simulated DLU: hardware config reader, lowering, the SystemC model, dlusim end to end
check_PROGRAMS += tests/test_hwcfg tests/test_lower
TESTS += tests/test_hwcfg tests/test_lower tests/test_dlusim.sh tests/test_dfp_dlusim.sh
tests_test_hwcfg_SOURCES = tests/test_hwcfg.c
tests_test_hwcfg_CPPFLAGS = $(tests_cflags)
tests_test_hwcfg_LDADD = $(tests_ldadd) $(INIH_LIBS)
tests_test_lower_SOURCES = tests/test_lower.c
tests_test_lower_CPPFLAGS = $(tests_cflags)
tests_test_lower_LDADD = $(tests_ldadd)
EXTRA_DIST += tests/test_dlusim.sh tests/test_dfp_dlusim.sh

# the cuda backend on a real GPU (skipped, 77, without one)
TESTS += tests/test_cuda.sh
EXTRA_DIST += tests/test_cuda.sh
