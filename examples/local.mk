# examples/local.mk -- reference nets (installed as data).
netsdir = $(pkgdatadir)/nets
dist_nets_DATA = examples/nets/mlp.net examples/nets/cnn.net examples/nets/lenet5.net
hwdir = $(pkgdatadir)/hw
dist_hw_DATA = examples/hw/dlu-base.ini examples/hw/dlu-small.ini
