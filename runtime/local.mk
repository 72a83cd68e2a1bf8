# runtime/local.mk -- the `dlu` program (devices, command line).
bin_PROGRAMS += dlu
dlu_SOURCES = \
	runtime/cli/cli.h \
	runtime/cli/cli_util.c \
	runtime/cli/cmd_eval.c \
	runtime/cli/cmd_info.c \
	runtime/cli/cmd_quantize.c \
	runtime/cli/cmd_sim.c \
	runtime/cli/cmd_train.c \
	runtime/cli/dlu_main.c
dlu_CPPFLAGS = $(AM_CPPFLAGS) $(OPENBLAS_CFLAGS) $(JANSSON_CFLAGS)
dlu_LDADD = libdlu.la $(OPENBLAS_LIBS) $(JANSSON_LIBS)
