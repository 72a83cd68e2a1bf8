# sim/local.mk -- the simulated DLU: hardware parameters, command stream, lowering, the
# value executor and the dlusim backend (into libdlu). Without SystemC the backend is a
# stub that says so; the rest builds everywhere.
dluinclude_HEADERS += include/dlu/sim.h
libdlu_la_SOURCES += \
	sim/cmd.c \
	sim/cmd.h \
	sim/counters.c \
	sim/exec.c \
	sim/exec.h \
	sim/hwcfg.c \
	sim/hwcfg.def \
	sim/hwcfg.h \
	sim/lower.c \
	sim/lower.h
if HAVE_SYSTEMC
libdlu_la_SOURCES += sim/dlusim_backend.c
else
libdlu_la_SOURCES += sim/dlusim_stub.c
endif
