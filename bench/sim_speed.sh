#!/bin/sh
# sim_speed.sh -- how fast the SystemC model simulates, and a small sweep of the core.
#
#   bench/sim_speed.sh [STEPS]      (default 20 training steps per run, batch 128)
#
# 1. Timing-only `dlu sim` of mlp, cnn and lenet5 in dfp8, dfp16 and fp32 on
#    examples/hw/dlu-base.ini: host seconds per simulated training step, simulated cycles
#    per host second, and host time per layer (from --json).
# 2. A sweep of cnn dfp8 over DPUs (4..64) and HBM bandwidth: cycles per step, MAC
#    utilisation, energy per step, to show how the model responds to the hardware.
# Writes bench/results/sim_speed-DATE.md with the machine it ran on. Wall-clock figures
# depend on what else the machine is doing.
set -eu
cd "$(dirname "$0")/.."
steps=${1:-20}
day=$(date -u +%Y-%m-%d)
cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //' || echo unknown)
out=bench/results/sim_speed-$day.md
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
[ -x ./dlu ] || { echo "sim_speed: build first (./scripts/bootstrap.sh)" >&2; exit 1; }
./dlu info | grep -q '^  dlusim  built in' || { echo "sim_speed: this build has no dlusim (SystemC)" >&2; exit 1; }

{
echo "# Simulator speed and a small sweep, $day"
echo
echo "Machine: $cpu, $(nproc) cores. dlu $(./dlu --version | awk '{print $3}'). Command: \`bench/sim_speed.sh $steps\`."
echo
echo "## Timing-only simulation of training steps (batch 128, examples/hw/dlu-base.ini, $steps steps)"
echo
echo "| net | format | host s per step | commands per step | simulated cycles per step | simulated cycles per host second | host ms per layer and step |"
echo "|---|---|---|---|---|---|---|"
} > "$tmp/md"
for net in mlp cnn lenet5; do
    for fmt in dfp8 dfp16 fp32; do
        ./dlu sim --hw examples/hw/dlu-base.ini --net examples/nets/$net.net --batch 128 --format $fmt \
            --steps "$steps" --quiet --json "$tmp/r.json"
        python3 - "$tmp/r.json" "$net" "$fmt" >>"$tmp/md" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["steps"]
layers = " ".join("%s %.3f" % (l["name"], 1e3 * l["host_seconds"]) for l in r["layers"] if "host_seconds" in l)
print("| %s | %s | %.4f | %.0f | %.0f | %.3g | %s |" % (sys.argv[2], sys.argv[3], r["host_seconds"] / s,
      r["step"]["commands"], r["step"]["cycles"], r["cycles_per_host_second"], layers))
PY
    done
done
{
echo
echo "## cnn, dfp8, batch 128: sweep of DPUs and HBM bandwidth (other parameters as dlu-base.ini)"
echo
echo "| DPUs | HBM GB/s | cycles per step | us per step at 1 GHz | MAC utilisation | stall memory | energy per step (mJ) | samples/J |"
echo "|---|---|---|---|---|---|---|---|"
} >> "$tmp/md"
for bw in 256 1024 4096; do
    for dpu in 4 16 64; do
        sed -e "s/^n_dpu = .*/n_dpu = $dpu/" -e "s/^hbm_gbytes_per_s = .*/hbm_gbytes_per_s = $bw/" \
            examples/hw/dlu-base.ini > "$tmp/hw.ini"
        ./dlu sim --hw "$tmp/hw.ini" --net examples/nets/cnn.net --batch 128 --format dfp8 --quiet --json "$tmp/r.json"
        python3 - "$tmp/r.json" "$dpu" "$bw" >>"$tmp/md" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["step"]
c = r["cycles"]
e = r["energy_pj"]["total"]
print("| %s | %s | %.0f | %.1f | %.1f%% | %.1f%% | %.3f | %.0f |" % (sys.argv[2], sys.argv[3], c, c / 1e3,
      100 * r["utilisation"]["mac"], 100 * r["cycles_by_cause"]["memory"] / c, e * 1e-9, 128 / (e * 1e-12)))
PY
    done
done
cp "$tmp/md" "$out"
cat "$out"
echo "written: $out"
