# docs/local.mk
dist_doc_DATA += docs/net-format.md docs/cli.md docs/numerics.md docs/dfp-training.md docs/backends.md
