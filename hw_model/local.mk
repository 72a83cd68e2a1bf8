# hw_model/local.mk -- the SystemC model of the DLU core (one folder per block), built into
# libdlu when configure found SystemC; tests/hw holds a testbench per block with its golden log.
HW_MODEL_SOURCES = \
	hw_model/common.h \
	hw_model/dluhw.h \
	hw_model/dma/dma.cc \
	hw_model/dma/dma.h \
	hw_model/dpu/dpu.cc \
	hw_model/dpu/dpu.h \
	hw_model/hbm/hbm.cc \
	hw_model/hbm/hbm.h \
	hw_model/master/master.cc \
	hw_model/master/master.h \
	hw_model/noc/noc.cc \
	hw_model/noc/noc.h \
	hw_model/top/chip.cc \
	hw_model/top/chip.h \
	hw_model/top/sc_main.cc
HW_TB = tests/hw/tb_hbm tests/hw/tb_noc tests/hw/tb_dma tests/hw/tb_dpu tests/hw/tb_master
EXTRA_DIST += tests/hw/run_golden.sh tests/hw/tb_common.h tests/hw/golden/hbm.log tests/hw/golden/noc.log \
	tests/hw/golden/dma.log tests/hw/golden/dpu.log tests/hw/golden/master.log
if HAVE_SYSTEMC
libdlu_la_SOURCES += $(HW_MODEL_SOURCES)
libdlu_la_CPPFLAGS += $(SYSTEMC_CFLAGS)
libdlu_la_LIBADD += $(SYSTEMC_LIBS)

check_PROGRAMS += tests/test_hw_model $(HW_TB)
TESTS += tests/test_hw_model tests/hw/run_golden.sh
tests_test_hw_model_SOURCES = tests/test_hw_model.c
tests_test_hw_model_CPPFLAGS = $(tests_cflags)
tests_test_hw_model_LDADD = $(tests_ldadd)
tb_cppflags = $(AM_CPPFLAGS) $(SYSTEMC_CFLAGS)
tb_ldadd = libdlu.la $(SYSTEMC_LIBS)
tests_hw_tb_hbm_SOURCES = tests/hw/tb_hbm.cc
tests_hw_tb_hbm_CPPFLAGS = $(tb_cppflags)
tests_hw_tb_hbm_LDADD = $(tb_ldadd)
tests_hw_tb_noc_SOURCES = tests/hw/tb_noc.cc
tests_hw_tb_noc_CPPFLAGS = $(tb_cppflags)
tests_hw_tb_noc_LDADD = $(tb_ldadd)
tests_hw_tb_dma_SOURCES = tests/hw/tb_dma.cc
tests_hw_tb_dma_CPPFLAGS = $(tb_cppflags)
tests_hw_tb_dma_LDADD = $(tb_ldadd)
tests_hw_tb_dpu_SOURCES = tests/hw/tb_dpu.cc
tests_hw_tb_dpu_CPPFLAGS = $(tb_cppflags)
tests_hw_tb_dpu_LDADD = $(tb_ldadd)
tests_hw_tb_master_SOURCES = tests/hw/tb_master.cc
tests_hw_tb_master_CPPFLAGS = $(tb_cppflags)
tests_hw_tb_master_LDADD = $(tb_ldadd)
else
EXTRA_DIST += $(HW_MODEL_SOURCES) tests/test_hw_model.c tests/hw/tb_hbm.cc tests/hw/tb_noc.cc tests/hw/tb_dma.cc \
	tests/hw/tb_dpu.cc tests/hw/tb_master.cc
endif
