# bench/local.mk -- benchmarks are scripts run by hand (never timed in tests).
EXTRA_DIST += bench/train_cpu.sh bench/peers/setup_venv.sh bench/peers/torch_train.py
