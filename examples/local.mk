# examples/local.mk -- reference nets (installed as data).
netsdir = $(pkgdatadir)/nets
dist_nets_DATA = examples/nets/mlp.net examples/nets/cnn.net examples/nets/lenet5.net
