# docs/local.mk
dist_doc_DATA += docs/net-format.md docs/cli.md docs/numerics.md docs/dfp-training.md docs/backends.md docs/cuda.md \
	docs/hw_model.md docs/sim-commands.md
