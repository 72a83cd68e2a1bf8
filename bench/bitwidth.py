#!/usr/bin/env python3
"""bitwidth.py -- the bit-width study: how test accuracy and DFP overflow/underflow depend on
the number formats, rounding and exponent-scaling policy used for training.

Trains one net over a grid of formats x rounding modes x scaling policies x seeds with
`dlu train`, one process per run, and summarises the runs into tables (Markdown and CSV) and
gnuplot plots. See bench/bitwidth.md for how to run it and how to read what it writes.

It is a driver, not a benchmark harness: samples/s are taken from each run's JSON report as
they come, on whatever else the machine is doing (parallel --jobs compete for the cores), and
the overflow/underflow rates are taken from the statistics dlu logs, every --stats-every-th
step. Python 3 standard library only; gnuplot (optional) for the plots.

Exit status: 0 all runs succeeded, 1 some run failed (the others still run and are tabulated)
or dlu is missing, 2 a bad command line.
"""

import argparse
import concurrent.futures
import csv
import datetime
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEFAULT_FORMATS = "fp32;dfp16;dfp8;w=dfp8,a=dfp8,e=dfp16,g=dfp16;w=dfp16,a=dfp16,e=dfp8,g=dfp8"
CLASSES = ("w", "a", "e", "g")          # weights, activations, errors, gradients
KINDS = ("y", "dx", "w", "dw")          # the per-layer sites tabulated and plotted
KIND_OF_CLASS = {"a": "y", "e": "dx", "w": "w", "g": "dw"}  # for sites without a layer prefix
STEPS_PER_EPOCH_GUESS = 469             # Fashion-MNIST at batch 128; only sizes --stats-every auto
STATS_POINTS = 500                      # --stats-every auto aims at about this many logged steps
OVERFLOW_POINTS = 120                   # the overflow plot pools steps into at most this many
DEFAULT_LABEL = "default"               # round or scale left to the library default
NA = "-"

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf", "#000000", "#aec7e8"]


def die(msg, code=2):
    print("bitwidth: " + msg, file=sys.stderr)
    sys.exit(code)


# ---------------------------------------------------------------------------------------------
# The grid

def split_list(text, what):
    items = [s.strip() for s in text.split(";")]
    items = [s for s in items if s]
    if not items:
        die("--%s: empty list" % what)
    if len(set(items)) != len(items):
        die("--%s: '%s' names an entry twice" % (what, text))
    return items


def parse_seeds(text):
    seeds = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            die("--seeds: '%s' is not a seed or a range A-B (expected e.g. 0,1,2 or 0-4)" % part)
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if hi < lo:
            die("--seeds: range '%s' runs backwards" % part)
        seeds.extend(range(lo, hi + 1))
    if len(set(seeds)) != len(seeds):
        die("--seeds: '%s' names a seed twice" % text)
    return seeds


def class_formats(fmt):
    """{'w': 'dfp8', ...} for 'dfp8' or 'w=dfp8,a=...'; None where it cannot be parsed
    (dlu then says what is wrong with it)."""
    if "=" not in fmt:
        return {c: fmt for c in CLASSES}
    out = {}
    for part in fmt.split(","):
        k, sep, v = part.partition("=")
        if not sep or k.strip() not in CLASSES:
            return None
        out[k.strip()] = v.strip()
    return out if set(out) == set(CLASSES) else None


def format_bits(name):
    m = re.search(r"(\d+)$", name)
    return int(m.group(1)) if m else None


def total_bits(fmt):
    """w + a + e + g bits (fp32 = 128, dfp8 = 32), or None if unknown."""
    cf = class_formats(fmt)
    if cf is None:
        return None
    bits = [format_bits(cf[c]) for c in CLASSES]
    return None if None in bits else sum(bits)


def is_fp32(fmt):
    cf = class_formats(fmt)
    return cf is not None and all(cf[c] == "fp32" for c in CLASSES)


def short_format(fmt):
    """'dfp8' stays; 'w=dfp8,a=dfp8,e=dfp16,g=dfp16' becomes 'w8 a8 e16 g16'."""
    cf = class_formats(fmt)
    if cf is None or "=" not in fmt:
        return fmt
    if len(set(cf.values())) == 1:
        return cf["w"]
    parts = []
    for c in CLASSES:
        b = format_bits(cf[c])
        parts.append("%s%s" % (c, b if b is not None else cf[c]))
    return " ".join(parts)


class Cell:
    """One (format, round, scale) point of the grid; fp32 has no round or scale."""

    def __init__(self, fmt, rnd, scale):
        self.fmt, self.round, self.scale = fmt, rnd, scale
        self.bits = total_bits(fmt)

    def key(self):
        return (self.fmt, self.round, self.scale)

    def label(self, value):
        if value is not None:
            return value
        return NA if is_fp32(self.fmt) else DEFAULT_LABEL

    def round_label(self):
        return self.label(self.round)

    def scale_label(self):
        return self.label(self.scale)

    def title(self):
        s = self.fmt
        if not is_fp32(self.fmt):
            s += " (round %s, scale %s)" % (self.round_label(), self.scale_label())
        return s


def slug(text):
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "x"


def run_name(cell, seed):
    if is_fp32(cell.fmt):
        return "%s__seed%d" % (slug(cell.fmt), seed)
    return "%s__r-%s__s-%s__seed%d" % (slug(cell.fmt), slug(cell.round_label()),
                                       slug(cell.scale_label()), seed)


def build_grid(args):
    formats = split_list(args.formats, "formats")
    rounds = [None if r == DEFAULT_LABEL else r for r in split_list(args.rounds, "rounds")]
    scales = [None if s == DEFAULT_LABEL else s for s in split_list(args.scales, "scales")]
    cells = []
    for fmt in formats:
        if is_fp32(fmt):
            cells.append(Cell(fmt, None, None))   # rounding and scaling do not apply to fp32
            continue
        for r in rounds:
            for s in scales:
                cells.append(Cell(fmt, r, s))
    return cells


# ---------------------------------------------------------------------------------------------
# Running dlu

def run_paths(out, name):
    base = os.path.join(out, "runs", name)
    return {"json": base + ".json", "stats": base + ".stats.jsonl", "args": base + ".args",
            "log": base + ".log"}


def dlu_argv(args, cell, seed, threads, json_path, stats_path):
    argv = [args.dlu, "train", "--net", args.net_arg, "--seed", str(seed), "--format", cell.fmt]
    if cell.round is not None:
        argv += ["--round", cell.round]
    if cell.scale is not None:
        argv += ["--scale", cell.scale]
    argv += ["--epochs", str(args.run_epochs)]
    if args.max_steps is not None:
        argv += ["--max-steps", str(args.max_steps)]
    argv += shlex.split(args.dlu_args)
    argv += ["--threads", str(threads), "--no-eval", "--quiet", "--json", json_path,
             "--stats", stats_path, "--stats-every", str(args.stats_every_n)]
    return argv


def comparable(argv):
    """The settings of a run: its dlu command line without the program, the output paths and
    --threads (which may change between sessions without changing the results)."""
    out, skip = [], False
    for a in argv[1:]:
        if skip:
            skip = False
        elif a in ("--threads", "--json", "--stats"):
            skip = True
        else:
            out.append(a)
    return " ".join(shlex.quote(a) for a in out)


print_lock = threading.Lock()


def show(path):
    """A path as the user would type it: relative to the current folder when inside it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def say(msg, err=False):
    with print_lock:
        print(msg, file=sys.stderr if err else sys.stdout, flush=True)


def execute(args, cell, seed, threads, out):
    """Runs one dlu train; returns (ok, report dict or None, seconds, message)."""
    name = run_name(cell, seed)
    p = run_paths(out, name)
    tmp_json, tmp_stats = p["json"] + ".part", p["stats"] + ".part"
    for f in (tmp_json, tmp_stats, p["json"], p["stats"]):   # a rerun's failure is no success
        if os.path.exists(f):
            os.remove(f)
    argv = dlu_argv(args, cell, seed, threads, tmp_json, tmp_stats)
    with open(p["args"], "w") as f:
        f.write(comparable(argv) + "\n")
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, errors="replace")
    except OSError as e:
        return False, None, 0.0, "cannot start %s: %s" % (args.dlu, e)
    dt = time.monotonic() - t0
    with open(p["log"], "w") as f:
        f.write("$ " + " ".join(shlex.quote(a) for a in argv) + "\n")
        f.write(proc.stdout)
        f.write(proc.stderr)
        f.write("exit status %d\n" % proc.returncode)
    if proc.returncode != 0:
        why = ("killed by signal %d" % -proc.returncode if proc.returncode < 0
               else "exit status %d" % proc.returncode)
        text = proc.stderr.strip() or proc.stdout.strip()[-2000:] or "(no output)"
        return False, None, dt, "%s\n%s" % (why, text)
    try:
        with open(tmp_json) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        return False, None, dt, "dlu exited 0 but its JSON report is unreadable: %s" % e
    if os.path.exists(tmp_stats):       # fp32 runs write none
        os.replace(tmp_stats, p["stats"])
    os.replace(tmp_json, p["json"])     # last: the JSON's presence marks the run as done
    return True, report, dt, ""


def load_report(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# Statistics files

def split_site(name, cls):
    """('fc1', 'y') for 'fc1.y'; a site without a layer prefix ('input') gets its class's kind."""
    layer, dot, kind = name.rpartition(".")
    if not dot:
        return name, KIND_OF_CLASS.get(cls, name)
    return layer, kind


def read_stats(path, series=False):
    """Sums per site over the logged steps: {site: {...}}, site order, and if series is true
    the per-step exponent and (overflow, count) of every site. A truncated last line (a run
    still going or killed) is ignored."""
    totals, order = {}, []
    steps, exps, rates = [], {}, {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            step = rec.get("step")
            if series:
                steps.append(step)
            for s in rec.get("sites", []):
                name = s["name"]
                t = totals.get(name)
                if t is None:
                    layer, kind = split_site(name, s.get("class", ""))
                    t = totals[name] = {"class": s.get("class", ""), "layer": layer, "kind": kind,
                                        "count": 0, "overflow": 0, "underflow": 0, "zeros": 0,
                                        "nan": 0, "steps": 0,
                                        "policy": s.get("policy", True)}
                    order.append(name)
                    if series:
                        exps[name], rates[name] = {}, {}
                for k in ("count", "overflow", "underflow", "zeros", "nan"):
                    t[k] += int(s.get(k, 0))
                t["steps"] += 1
                if series:
                    exps[name][step] = s.get("exp")
                    rates[name][step] = (s.get("overflow", 0), s.get("count", 0))
    return totals, order, (steps, exps, rates)


def rate(num, den):
    return num / den if den else None


# ---------------------------------------------------------------------------------------------
# Summaries

def fmt_num(x, spec):
    if x is None:
        return NA
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    return spec % x


def fmt_rate(x):
    if x is None:
        return NA
    return "0" if x == 0 else "%.2e" % x


def summarise(cells, seeds, results, out):
    """One dict per cell with accuracy statistics, losses, speed and pooled DFP rates; also the
    per-layer pooled sums {cell key: (layers order, {(layer, kind): totals})}."""
    rows, layer_tables = [], {}
    for cell in cells:
        reps, failed, missing = [], [], []
        site_tot, site_order = {}, []
        stats_runs = 0
        for seed in seeds:
            st = results.get((cell.key(), seed))
            if st is None or st["state"] == "missing":
                missing.append(seed)
                continue
            if st["state"] == "failed":
                failed.append(seed)
                continue
            reps.append(st["report"])
            sp = run_paths(out, run_name(cell, seed))["stats"]
            if os.path.exists(sp):
                tot, order, _ = read_stats(sp)
                stats_runs += 1
                for name in order:
                    if name not in site_tot:
                        site_tot[name] = dict(tot[name])
                        site_order.append(name)
                    else:
                        for k in ("count", "overflow", "underflow", "zeros", "nan", "steps"):
                            site_tot[name][k] += tot[name][k]
        accs = [100.0 * r["test_accuracy"] for r in reps if "test_accuracy" in r]
        losses = [r["train_loss"] for r in reps if "train_loss" in r]
        speeds = [r["samples_per_second"] for r in reps if "samples_per_second" in r]
        row = {"cell": cell, "n": len(seeds), "ok": len(reps), "failed": failed,
               "missing": missing, "stats_runs": stats_runs}
        row["acc_mean"] = statistics.fmean(accs) if accs else None
        row["acc_sd"] = statistics.stdev(accs) if len(accs) >= 2 else None
        row["acc_min"] = min(accs) if accs else None
        row["acc_max"] = max(accs) if accs else None
        row["loss_mean"] = statistics.fmean(losses) if losses else None
        row["sps_mean"] = statistics.fmean(speeds) if speeds else None
        kind_sites = [n for n in site_order if site_tot[n]["kind"] in KINDS]
        cnt = sum(site_tot[n]["count"] for n in kind_sites)
        row["overflow_rate"] = rate(sum(site_tot[n]["overflow"] for n in kind_sites), cnt)
        row["underflow_rate"] = rate(sum(site_tot[n]["underflow"] for n in kind_sites), cnt)
        worst = None
        for n in kind_sites:
            r = rate(site_tot[n]["overflow"], site_tot[n]["count"])
            if r is not None and r > 0 and (worst is None or r > worst[1]):
                worst = (n, r)
        row["worst"] = worst
        rows.append(row)
        layers = []
        per = {}
        for n in kind_sites:
            t = site_tot[n]
            if t["layer"] not in layers:
                layers.append(t["layer"])
            per[(t["layer"], t["kind"])] = dict(t, site=n)
        layer_tables[cell.key()] = (layers, per, stats_runs)
    ref = [r for r in rows if is_fp32(r["cell"].fmt) and r["acc_mean"] is not None]
    fp32_mean = ref[0]["acc_mean"] if ref else None
    for r in rows:
        if is_fp32(r["cell"].fmt):
            r["delta"] = 0.0 if r["acc_mean"] is not None else None
        else:
            r["delta"] = (r["acc_mean"] - fp32_mean
                          if r["acc_mean"] is not None and fp32_mean is not None else None)
    return rows, layer_tables, fp32_mean


def status_text(row):
    parts = []
    if row["failed"]:
        parts.append("FAILED seed %s" % ",".join(map(str, row["failed"])))
    if row["missing"]:
        parts.append("missing seed %s" % ",".join(map(str, row["missing"])))
    return "; ".join(parts) or "ok"


def header_lines(meta):
    return [
        "Command: `%s`" % meta["command"],
        "",
        "Machine: %s, %d logical CPUs; host %s. dlu %s%s." % (
            meta["cpu"], meta["cores"], meta["host"], meta["dlu_version"],
            " (git %s)" % meta["git"] if meta["git"] else ""),
        "",
        "Net %s; %s; seeds %s; %sthreads per run %s; statistics every %d step(s); %s." % (
            meta["net"], meta["length"], meta["seeds"],
            "%d run(s) at a time; " % meta["jobs"] if meta["jobs"] else "",
            meta["threads"], meta["stats_every"], meta["date"]),
    ]


def write_tables(out, rows, layer_tables, fp32_mean, meta):
    cols = ["format", "bits", "round", "scale", "seeds_ok", "seeds", "acc_mean_pct", "acc_sd_pct",
            "acc_min_pct", "acc_max_pct", "delta_fp32_pts", "train_loss_mean",
            "samples_per_second_mean", "overflow_rate", "underflow_rate", "worst_overflow_site",
            "worst_overflow_rate", "status"]
    with open(os.path.join(out, "table.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            c = r["cell"]
            w.writerow([c.fmt, c.bits if c.bits is not None else "", c.round_label(),
                        c.scale_label(), r["ok"], r["n"]] +
                       ["" if r[k] is None else repr(r[k]) for k in
                        ("acc_mean", "acc_sd", "acc_min", "acc_max", "delta", "loss_mean",
                         "sps_mean", "overflow_rate", "underflow_rate")] +
                       [r["worst"][0] if r["worst"] else "",
                        repr(r["worst"][1]) if r["worst"] else "", status_text(r)])

    md = ["# Bit-width study: %s" % meta["net_name"], ""] + header_lines(meta) + [""]
    md += ["| format | bits | round | scale | seeds ok | acc. mean % | sd | min | max "
           "| vs fp32 (pts) | train loss | samples/s | overflow | underflow "
           "| worst overflow site | status |",
           "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        c = r["cell"]
        worst = "%s %s" % (r["worst"][0], fmt_rate(r["worst"][1])) if r["worst"] else NA
        if is_fp32(c.fmt):
            delta = "ref" if r["acc_mean"] is not None else NA
        else:
            delta = fmt_num(r["delta"], "%+.2f")
        md.append(("| " + " | ".join(["%s"] * 4 + ["%d/%d"] + ["%s"] * 11) + " |") % (
            c.fmt, c.bits if c.bits is not None else "?", c.round_label(), c.scale_label(),
            r["ok"], r["n"], fmt_num(r["acc_mean"], "%.2f"), fmt_num(r["acc_sd"], "%.2f"),
            fmt_num(r["acc_min"], "%.2f"), fmt_num(r["acc_max"], "%.2f"), delta,
            fmt_num(r["loss_mean"], "%.4f"), fmt_num(r["sps_mean"], "%.0f"),
            fmt_rate(r["overflow_rate"]), fmt_rate(r["underflow_rate"]), worst,
            status_text(r)))
    md += ["",
           "Accuracy: test accuracy after training, in %, over the seeds that succeeded; sd is "
           "the sample standard deviation (2 seeds or more). vs fp32: mean minus the fp32 mean, "
           "in points. train loss: mean over seeds of each run's mean loss over its last epoch. "
           "Overflow / underflow: saturated / flushed-to-zero elements over all elements of the "
           "y, dx, w and dw sites of every layer, summed over the logged steps of all seeds; "
           "fp32 runs log no statistics. Per layer: layers.md."]
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write("\n".join(md) + "\n")

    lcols = ["format", "round", "scale", "layer", "kind", "site", "class", "runs", "logged_steps",
             "count", "overflow", "underflow", "zeros", "nan", "overflow_rate", "underflow_rate"]
    lmd = ["# Bit-width study: %s, per layer" % meta["net_name"], ""] + header_lines(meta) + [
        "",
        "Overflow (ovf) and underflow (unf) rates per site: elements saturated / flushed to zero "
        "over all elements, summed over the logged steps of every seed of the cell. - : the "
        "layer has no such site. Sites of ReLU layers inherit their producer's exponent.", ""]
    with open(os.path.join(out, "layers.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(lcols)
        for r in rows:
            c = r["cell"]
            layers, per, nruns = layer_tables[c.key()]
            if not layers:
                continue
            lmd += ["## %s" % c.title(), "",
                    "| layer | " + " | ".join("%s ovf | %s unf" % (k, k) for k in KINDS) + " |",
                    "|---|" + "---:|" * (2 * len(KINDS))]
            for layer in layers:
                cellsmd = []
                for k in KINDS:
                    t = per.get((layer, k))
                    if t is None:
                        cellsmd += [NA, NA]
                        continue
                    o, u = rate(t["overflow"], t["count"]), rate(t["underflow"], t["count"])
                    cellsmd += [fmt_rate(o), fmt_rate(u)]
                    w.writerow([c.fmt, c.round_label(), c.scale_label(), layer, k, t["site"],
                                t["class"], nruns, t["steps"], t["count"], t["overflow"],
                                t["underflow"], t["zeros"], t["nan"],
                                "" if o is None else repr(o), "" if u is None else repr(u)])
                lmd.append("| %s | %s |" % (layer, " | ".join(cellsmd)))
            lmd.append("")
    if not any(layer_tables[r["cell"].key()][0] for r in rows):
        lmd.append("No run wrote statistics (fp32 runs write none).")
    with open(os.path.join(out, "layers.md"), "w") as f:
        f.write("\n".join(lmd) + "\n")


# ---------------------------------------------------------------------------------------------
# Plots

def gp_str(s):
    """A gnuplot double-quoted string; a newline in s becomes a line break in the label."""
    return '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Plotter:
    def __init__(self, out):
        self.out = out
        self.dir = os.path.join(out, "plots")
        self.gnuplot = shutil.which("gnuplot")
        self.png = None
        if self.gnuplot:
            probe = subprocess.run([self.gnuplot, "-e", "set terminal pngcairo"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.png = "pngcairo" if probe.returncode == 0 else "png"
        self.made, self.failed = [], []
        for stem in ("accuracy_vs_bits", "exponent_per_site", "overflow_per_site"):
            for ext in (".png", ".svg"):        # never leave a plot of an earlier invocation
                if os.path.exists(os.path.join(out, stem + ext)):
                    os.remove(os.path.join(out, stem + ext))

    def terminals(self, stem, w, h):
        if self.png == "pngcairo":
            png = 'set terminal pngcairo size %d,%d font "sans,10" noenhanced' % (w, h)
        else:
            png = "set terminal png size %d,%d noenhanced" % (w, h)
        svg = ('set terminal svg size %d,%d dynamic font "sans,10" noenhanced '
               'background rgb "white"' % (w, h))
        return [(png, stem + ".png"), (svg, stem + ".svg")]

    def render(self, stem, body, w, h):
        """Writes plots/STEM.gp (PNG and SVG from one body) and runs gnuplot in plots/."""
        lines = []
        for term, name in self.terminals(stem, w, h):
            lines += [term, "set output %s" % gp_str(os.path.join("..", name)), "reset"]
            lines += body
            lines += ["set output", ""]
        gp = os.path.join(self.dir, stem + ".gp")
        with open(gp, "w") as f:
            f.write("# %s -- written by bench/bitwidth.py; rerun with: cd plots && gnuplot %s\n"
                    % (stem + ".gp", stem + ".gp"))
            f.write("\n".join(lines))
        proc = subprocess.run([self.gnuplot, stem + ".gp"], cwd=self.dir, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, errors="replace")
        if proc.returncode != 0:
            self.failed.append(stem)
            say("bitwidth: gnuplot failed on plots/%s.gp:\n%s" % (stem, proc.stderr.strip()),
                err=True)
        else:
            self.made += [stem + ".png", stem + ".svg"]

    def accuracy(self, rows, fp32_mean, meta):
        plotted = [r for r in rows if r["acc_mean"] is not None]
        if not plotted:
            return
        # x: formats ordered by total bits (unknown widths last), ties in the order given.
        fmts = []
        for r in plotted:
            if r["cell"].fmt not in fmts:
                fmts.append(r["cell"].fmt)
        fmts.sort(key=lambda f: (total_bits(f) is None, total_bits(f) or 0))
        xpos = {f: i for i, f in enumerate(fmts)}
        series = []   # (title, [rows])
        for r in plotted:
            c = r["cell"]
            title = "fp32" if is_fp32(c.fmt) else "round %s, scale %s" % (c.round_label(),
                                                                           c.scale_label())
            for s in series:
                if s[0] == title:
                    s[1].append(r)
                    break
            else:
                series.append((title, [r]))
        dodge = [t for t, _ in series if t != "fp32"]    # fp32 has its own x: never shifted
        m = len(dodge)
        width = min(0.5, 0.12 * (m - 1))
        dat = os.path.join(self.dir, "accuracy.dat")
        with open(dat, "w") as f:
            f.write("# x mean_pct min_pct max_pct format; one block per round/scale series\n")
            for i, (title, rs) in enumerate(series):
                off = ((dodge.index(title) / (m - 1) - 0.5) * width
                       if m > 1 and title in dodge else 0.0)
                f.write("# %s\n" % title)
                for r in sorted(rs, key=lambda r: xpos[r["cell"].fmt]):
                    f.write("%g %.6g %.6g %.6g %s\n" % (xpos[r["cell"].fmt] + off, r["acc_mean"],
                                                        r["acc_min"], r["acc_max"],
                                                        gp_str(r["cell"].fmt)))
                f.write("\n\n")
        tics = []
        for fm in fmts:
            b = total_bits(fm)
            tics.append("%s %d" % (gp_str("%s\n%s bits" % (short_format(fm),
                                                           b if b is not None else "?")),
                                   xpos[fm]))
        lo = min(r["acc_min"] for r in plotted)
        hi = max(r["acc_max"] for r in plotted)
        pad = max(0.5, 0.08 * (hi - lo))
        body = [
            "set title %s" % gp_str("%s: test accuracy vs. bits (mean over seeds %s, "
                                    "bars: min-max), %s"
                                    % (meta["net_name"], meta["seeds"], meta["length"])),
            "set xlabel %s" % gp_str("format (total bits of w + a + e + g)"),
            "set ylabel %s" % gp_str("test accuracy (%)"),
            "set xtics (%s)" % ", ".join(tics),
            "set xrange [-0.6:%g]" % (len(fmts) - 0.4),
            "set yrange [%g:%g]" % (max(0.0, lo - pad), min(100.0, hi + pad)),
            "set grid ytics",
            "set key outside right top vertical",
            "set xlabel offset 0,-1",
            "set bmargin 6",
        ]
        plots = []
        if fp32_mean is not None:
            plots.append("%r with lines dt 2 lw 1.5 lc rgb \"#555555\" title %s"
                         % (fp32_mean, gp_str("fp32 mean %.2f%%" % fp32_mean)))
        for i, (title, rs) in enumerate(series):
            color = "#000000" if title == "fp32" else COLORS[i % len(COLORS)]
            plots.append("\"accuracy.dat\" index %d using 1:2:3:4 with yerrorbars pt 7 ps 1.3 "
                         "lw 1.5 lc rgb \"%s\" title %s" % (i, color, gp_str(title)))
        body.append("plot " + ", \\\n     ".join(plots))
        self.render("accuracy_vs_bits", body, 1250, 650)

    def sites(self, run_label, stats_path, target=None):
        totals, order, (steps, exps, rates) = read_stats(stats_path, series=True)
        by_kind = {k: [] for k in KINDS}
        layers = []
        for n in order:
            if totals[n]["kind"] in KINDS:
                by_kind[totals[n]["kind"]].append(n)
                if totals[n]["layer"] not in layers:
                    layers.append(totals[n]["layer"])
        sites = [n for k in KINDS for n in by_kind[k]]
        if not sites or not steps:
            return
        steps = sorted(set(s for s in steps if s is not None))
        col = {n: i + 2 for i, n in enumerate(sites)}
        # Overflow: per step it is mostly 0 with spikes, a barcode over hundreds of steps; so
        # the rate is pooled over windows of `win` logged steps (sum overflow / sum count),
        # at most OVERFLOW_POINTS windows, each plotted at its first step.
        win = max(1, math.ceil(len(steps) / OVERFLOW_POINTS))
        every = steps[1] - steps[0] if len(steps) > 1 else 1   # --stats-every
        windows = [steps[i:i + win] for i in range(0, len(steps), win)]
        wrate = {}
        for n in sites:
            wrate[n] = {}
            for w in windows:
                o = sum(rates[n][t][0] for t in w if t in rates[n])
                c = sum(rates[n][t][1] for t in w if t in rates[n])
                wrate[n][w[0]] = o / c if c else None
        nonzero = [r for n in sites for r in wrate[n].values() if r]
        floor = 10.0 ** (math.floor(math.log10(min(nonzero))) - 1) if nonzero else 1e-7
        top = max(nonzero + [target or 0]) if nonzero else max(floor * 100, target or 0)
        for name, xs, table in (("exponent.dat", steps, exps),
                                ("overflow.dat", [w[0] for w in windows], wrate)):
            with open(os.path.join(self.dir, name), "w") as f:
                f.write("# step " + " ".join(sites) + "\n")
                for x in xs:
                    vals = [table[n].get(x) for n in sites]
                    f.write("%d %s\n" % (x, " ".join("?" if v is None else "%.10g" % v
                                                    for v in vals)))
        color = {l: COLORS[i % len(COLORS)] for i, l in enumerate(layers)}
        what = {"y": "y (activations)", "dx": "dx (errors)", "w": "w (weights)",
                "dw": "dw (weight gradients)"}
        kinds = [k for k in KINDS if by_kind[k]]

        def panels(datfile, ylabel, style, using, common, per_kind, ref=None, note=""):
            body = ['set datafile missing "?"',
                    "set multiplot layout %d,1 title %s" % (len(kinds),
                                                           gp_str(run_label + note)),
                    "set key outside right top",
                    "set lmargin at screen 0.09", "set rmargin at screen 0.80",
                    "set grid"] + (["set xtics 1"] if steps[-1] - steps[0] <= 10 else []) + common
            for i, k in enumerate(kinds):
                body += per_kind(k)
                body.append("set ylabel %s" % gp_str("%s of %s" % (ylabel, what[k])))
                body.append("set xlabel %s" % gp_str("step" if i == len(kinds) - 1 else ""))
                plots = []
                # Sites whose exponent the policy sets are solid, earlier ones wider so that
                # equal lines stay visible; inherited ones (ReLU: policy false) thin and dashed.
                own = [n for n in by_kind[k] if totals[n]["policy"]]
                inherited = [n for n in by_kind[k] if not totals[n]["policy"]]
                for j, n in enumerate(own + inherited):
                    if totals[n]["policy"]:
                        lw, dt = max(1.0, 3.0 - 0.6 * j), 1
                    else:
                        lw, dt = 1.5, 2
                    plots.append("%s using 1:%s with %s lw %.1f dt %d lc rgb \"%s\" title %s"
                                 % (gp_str(datfile), using(col[n]), style, lw, dt,
                                    color[totals[n]["layer"]], gp_str(n)))
                if ref:
                    plots.append(ref)
                body.append("plot " + ", \\\n     ".join(plots))
            body.append("unset multiplot")
            return body

        def exp_tics(k):
            vals = [v for n in by_kind[k] for v in exps[n].values() if v is not None]
            span = max(vals) - min(vals) if vals else 0
            return ["set ytics 1" if span <= 10 else "set ytics autofreq"]

        height = 120 + 260 * len(kinds)
        self.render("exponent_per_site",
                    panels("exponent.dat", "exponent", "steps", lambda c: "%d" % c,
                           ["set offsets 0, 0, 0.5, 0.5"], exp_tics),
                    1100, height)
        decades = list(range(int(round(math.log10(floor))) + 1,
                             int(math.ceil(math.log10(top))) + 1))
        tics = ['"0" %g' % floor] + ['"1e%d" 1e%d' % (d, d) for d in decades]
        self.render("overflow_per_site",
                    panels("overflow.dat", "overflow rate", "lines",
                           lambda c: "(column(%d) > %g ? column(%d) : %g)" % (c, floor, c, floor),
                           ["set logscale y",
                            "set yrange [%g:%g]" % (floor / 2, 10.0 ** decades[-1]),
                            "set ytics (%s)" % ", ".join(tics)], lambda k: [],
                           ref=None if not target else
                           "%r with lines dt 3 lw 1.5 lc rgb \"#555555\" title %s"
                           % (target, gp_str("policy rate %g" % target)),
                           note="\noverflow / count per %s" % (
                               "step" if win * every == 1 else
                               "window of %d steps (plotted at its first step)" % (win * every))),
                    1100, height)


def choose_plot_run(args, cells, seeds, results, out):
    """(cell, seed) of the run whose exponents and overflow are plotted: --plot-run, or the
    first seed of the lowest-precision format; None (and why) if that run has no statistics."""
    def usable(cell, seed):
        st = results.get((cell.key(), seed))
        return (st is not None and st["state"] == "done"
                and os.path.exists(run_paths(out, run_name(cell, seed))["stats"]))

    if args.plot_run:
        cell, seed = args.plot_run_cs
        if usable(cell, seed):
            return (cell, seed), ""
        return None, "--plot-run %s did not succeed or wrote no statistics" % args.plot_run
    order = sorted(range(len(cells)),
                   key=lambda i: (cells[i].bits is None, cells[i].bits or 0, i))
    first = True
    for i in order:
        cell = cells[i]
        if is_fp32(cell.fmt):
            continue
        for seed in seeds:
            if usable(cell, seed):
                if not first:
                    say("bitwidth: plotting %s (the default run has no statistics)"
                        % run_name(cell, seed))
                return (cell, seed), ""
            first = False
    return None, "no DFP run with statistics"


# ---------------------------------------------------------------------------------------------
# Main

def machine_info():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return cpu, os.cpu_count() or 1, os.uname().nodename


def dlu_version(dlu):
    try:
        out = subprocess.run([dlu, "--version"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.split()[-1] if out else "unknown"


def git_describe():
    try:
        rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             timeout=30)
        if rev.returncode != 0:
            return ""
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               timeout=30).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return ""


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="bench/bitwidth.py",
        description="Bit-width study: train a net with dlu over formats x rounding x scaling x "
                    "seeds and tabulate/plot accuracy and DFP overflow/underflow. "
                    "See bench/bitwidth.md.")
    ap.add_argument("--net", default=os.path.join(REPO, "examples", "nets", "mlp.net"),
                    help="net file (default examples/nets/mlp.net)")
    ap.add_argument("--formats", default=DEFAULT_FORMATS,
                    help="';'-separated --format values (default %(default)s)")
    ap.add_argument("--rounds", default=DEFAULT_LABEL,
                    help="';'-separated --round values; 'default' passes none, leaving the "
                         "library default (default %(default)s)")
    ap.add_argument("--scales", default="overflow",
                    help="';'-separated --scale values, e.g. 'overflow;max;overflow:rate=1e-3'; "
                         "'default' passes none (default %(default)s)")
    ap.add_argument("--seeds", default="0,1,2",
                    help="seeds, e.g. 0,1,2 or 0-4 (default %(default)s)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="epochs per run (default 1, or as many as --max-steps needs)")
    ap.add_argument("--max-steps", type=int, default=None, help="optimizer steps per run")
    ap.add_argument("--stats-every", default="auto",
                    help="log statistics every K steps (default auto: about %d logged steps "
                         "per run)" % STATS_POINTS)
    ap.add_argument("--jobs", "-j", type=int, default=1,
                    help="runs in parallel; each gets --threads max(1, cores/J) (default 1)")
    ap.add_argument("--out", default=None,
                    help="output folder (default bench/results/bitwidth-NET-DATE/)")
    ap.add_argument("--force", action="store_true", help="rerun runs whose JSON already exists")
    ap.add_argument("--tables-only", action="store_true",
                    help="run nothing; tabulate and plot the runs already in --out")
    ap.add_argument("--plot-run", default=None,
                    help="run to plot exponents and overflow of (name as in runs/, without .json; "
                         "default: the first seed of the lowest-precision format)")
    ap.add_argument("--dlu", default=os.path.join(REPO, "dlu"),
                    help="the dlu program (default ./dlu of this checkout)")
    ap.add_argument("--dlu-args", default="",
                    help="more dlu train options for every run, e.g. '--batch 64 --lr 0.02'")
    args = ap.parse_args(argv)
    for name in ("epochs", "max_steps"):
        v = getattr(args, name)
        if v is not None and v < 1:
            ap.error("--%s must be at least 1" % name.replace("_", "-"))
    if args.jobs < 1:
        ap.error("--jobs must be at least 1")
    if args.stats_every != "auto":
        try:
            args.stats_every_n = int(args.stats_every)
        except ValueError:
            ap.error("--stats-every: '%s' is not a number or 'auto'" % args.stats_every)
        if args.stats_every_n < 1:
            ap.error("--stats-every must be at least 1")
    reserved = {"--net", "--seed", "--format", "--round", "--scale", "--epochs", "--max-steps",
                "--threads", "--json", "--stats", "--stats-every", "--quiet", "--no-eval",
                "--checkpoint", "--resume"}
    for a in shlex.split(args.dlu_args):
        if a.split("=")[0] in reserved:
            ap.error("--dlu-args: %s is set by this script (use its own option)" % a)
    return args


def main(argv):
    args = parse_args(argv)
    seeds = parse_seeds(args.seeds)
    cells = build_grid(args)

    net_abs = os.path.abspath(args.net)
    if not os.path.isfile(net_abs):
        die("--net %s: no such file" % args.net)
    rel = os.path.relpath(net_abs, REPO)
    args.net_arg = rel if not rel.startswith("..") else net_abs
    args.dlu = os.path.abspath(args.dlu)
    net_name = os.path.splitext(os.path.basename(net_abs))[0]
    if args.out is None:
        day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
        args.out = os.path.join(REPO, "bench", "results", "bitwidth-%s-%s" % (net_name, day))
    out = os.path.abspath(args.out)

    # Length of a run: --max-steps alone means "that many steps", however many epochs it takes.
    if args.epochs is None:
        args.run_epochs = args.max_steps if args.max_steps is not None else 1
    else:
        args.run_epochs = args.epochs
    est = args.run_epochs * STEPS_PER_EPOCH_GUESS
    if args.max_steps is not None:
        est = min(est, args.max_steps)
    if args.stats_every == "auto":
        args.stats_every_n = max(1, est // STATS_POINTS)
    if args.max_steps is not None and args.epochs is None:
        length = "%d steps" % args.max_steps
    elif args.max_steps is not None:
        length = "%d epoch(s), at most %d steps" % (args.epochs, args.max_steps)
    else:
        length = "%d epoch(s)" % args.run_epochs

    names = {}
    for cell in cells:
        for seed in seeds:
            n = run_name(cell, seed)
            if n in names:
                die("runs '%s' and '%s' would share the file name %s"
                    % (names[n][0].title(), cell.title(), n))
            names[n] = (cell, seed)
    if args.plot_run is not None:
        if args.plot_run not in names:
            die("--plot-run %s is not a run of this study (expected a name as in runs/ without "
                ".json, e.g. %s)" % (args.plot_run, next(iter(names))))
        args.plot_run_cs = names[args.plot_run]

    if not args.tables_only and not (os.path.isfile(args.dlu) and os.access(args.dlu, os.X_OK)):
        die("%s is not an executable (build it: make -j2 in %s)" % (args.dlu, REPO), code=1)

    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    threads = max(1, cores // args.jobs)
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    os.makedirs(os.path.join(out, "plots"), exist_ok=True)

    # Which runs are done, which to run. A finished run whose command line differs from what
    # this invocation would run (other epochs, other options) is not silently reused.
    results, todo, mismatched = {}, [], []
    for seed in seeds:              # seed-major: early results cover every cell
        for cell in cells:
            p = run_paths(out, run_name(cell, seed))
            rep = None if args.force else load_report(p["json"])
            if rep is not None:
                want = comparable(dlu_argv(args, cell, seed, threads, p["json"], p["stats"]))
                try:
                    with open(p["args"]) as f:
                        have = f.read().strip()
                except OSError:
                    have = want
                if have != want and not args.tables_only:
                    mismatched.append((p["json"], have, want))
                results[(cell.key(), seed)] = {"state": "done", "report": rep}
            elif args.tables_only:
                results[(cell.key(), seed)] = {"state": "missing"}
            else:
                todo.append((cell, seed))
    if mismatched:
        for path, have, want in mismatched:
            say("bitwidth: %s was made by a different command:\n  was: %s\n  now: %s"
                % (show(path), have, want), err=True)
        die("use --force to rerun them, or another --out")

    done_before = len(results)
    if not args.tables_only:
        say("bitwidth: %d runs (%d cells x %d seeds), %d done already; %d at a time, %d thread(s) "
            "each; output in %s" % (len(cells) * len(seeds), len(cells), len(seeds), done_before,
                                    args.jobs, threads, out))
    nfail = 0
    if todo:
        counter = [0]
        stopping = threading.Event()

        def task(cs):
            cell, seed = cs
            ok, rep, dt, msg = execute(args, cell, seed, threads, out)
            if stopping.is_set():
                return cs, ok, rep
            with print_lock:
                counter[0] += 1
                k = counter[0]
            if ok:
                acc = rep.get("test_accuracy")
                say("[%d/%d] %s seed %d: test accuracy %s, %.0f samples/s (%.1f s)"
                    % (k, len(todo), cell.title(), seed,
                       "%.2f%%" % (100 * acc) if isinstance(acc, (int, float)) else "?",
                       rep.get("samples_per_second", float("nan")), dt))
            else:
                say("[%d/%d] %s seed %d: FAILED (%.1f s), %s:\n%s"
                    % (k, len(todo), cell.title(), seed, dt,
                       show(run_paths(out, run_name(cell, seed))["log"]),
                       "\n".join("    " + l for l in msg.splitlines())), err=True)
            return cs, ok, rep

        pool = concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs)
        try:
            for (cell, seed), ok, rep in pool.map(task, todo):
                results[(cell.key(), seed)] = ({"state": "done", "report": rep} if ok
                                               else {"state": "failed"})
                nfail += not ok
        except KeyboardInterrupt:
            # The runs in flight got the terminal's SIGINT too; start no more of them.
            stopping.set()
            pool.shutdown(wait=False, cancel_futures=True)
            say("bitwidth: interrupted; the same command resumes where this one stopped",
                err=True)
            return 130
        pool.shutdown()

    cpu, ncores, host = machine_info()
    meta = {
        "command": " ".join(shlex.quote(a) for a in ["python3", os.path.relpath(
            os.path.abspath(sys.argv[0]))] + list(argv)),
        "cpu": cpu, "cores": ncores, "host": host,
        "dlu_version": dlu_version(args.dlu) if os.path.exists(args.dlu) else "unknown",
        "git": git_describe(), "net": args.net_arg, "net_name": net_name, "length": length,
        "seeds": ",".join(map(str, seeds)),
        "jobs": None if args.tables_only else args.jobs,
        "threads": ",".join(str(t) for t in sorted({
            st["report"]["threads"] for st in results.values()
            if st["state"] == "done" and isinstance(st["report"].get("threads"), int)})) or "-",
        "stats_every": args.stats_every_n,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    rows, layer_tables, fp32_mean = summarise(cells, seeds, results, out)
    write_tables(out, rows, layer_tables, fp32_mean, meta)
    written = ["table.md", "table.csv", "layers.md", "layers.csv"]

    plotter = Plotter(out)
    if not plotter.gnuplot:
        say("bitwidth: gnuplot not found: no plots (install gnuplot and rerun with --tables-only)",
            err=True)
    else:
        plotter.accuracy(rows, fp32_mean, meta)
        chosen, why = choose_plot_run(args, cells, seeds, results, out)
        if chosen is None:
            say("bitwidth: %s: no exponent/overflow plots" % why, err=True)
        else:
            cell, seed = chosen
            name = run_name(cell, seed)
            rep = results[(cell.key(), seed)]["report"]
            m = re.match(r"overflow:(?:.*,)?rate=([0-9.eE+-]+)", str(rep.get("scale", "")))
            plotter.sites("%s, seed %d (runs/%s)" % (cell.title(), seed, name),
                          run_paths(out, name)["stats"], float(m.group(1)) if m else None)
        written += plotter.made

    print("bitwidth: wrote %s in %s" % (", ".join(written), out))
    with open(os.path.join(out, "table.md")) as f:
        print(f.read(), end="")
    if nfail:
        say("bitwidth: %d run(s) failed (see the status column)" % nfail, err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
