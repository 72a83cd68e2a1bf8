/* cmd_quantize.c -- `dlu quantize`: raw float32 in, raw int8/int16 DFP out, statistics as JSON.
 *
 * A thin driver over dlu_quantize_f32() (dlu/numerics.h) and, with --auto, a scaling
 * policy's calibration (dlu/scale.h): it exists to look at what the numerics do to real
 * data, and to let scripts and other implementations check their bits against ours.
 * It has no arithmetic of its own. Input is read whole and checked before anything is
 * written; a file OUT is written to a temporary file beside it and renamed into place,
 * so an error never leaves OUT half-written. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "dlu/numerics.h"
#include "dlu/scale.h"

static const char *const help =
    "usage: dlu quantize [OPTIONS] (--exp E | --auto) IN OUT\n"
    "\n"
    "Quantize raw little-endian float32 values from IN to dynamic fixed point and write\n"
    "the integers, little-endian int8 or int16, to OUT (value = q * 2^E). IN or OUT may\n"
    "be '-' for standard input or output. Prints one JSON object with the exponent and\n"
    "the statistics (count, zeros, nan, overflow, underflow, histogram of k =\n"
    "floor(log2|x|) over the nonzero values, k clamped to [-64, 63]) on standard output,\n"
    "or on standard error when OUT is '-'.\n"
    "\n"
    "  --bits 8|16           integer width: dfp8 or dfp16 (default 8)\n"
    "  --exp E               the shared exponent; E in [-149, 129 - bits]\n"
    "  --auto                choose the exponent from the data by the scaling policy's\n"
    "                        calibration (docs/numerics.md, section 12)\n"
    "  --scale POLICY[:K=V,...]  the policy for --auto (default overflow), e.g. max,\n"
    "                        overflow:rate=1e-3,margin=1, percentile:p=99.9, amax, autoflex\n"
    "  --round nearest|stochastic  rounding (default nearest, ties to even)\n"
    "  --seed N              stochastic rounding: seed (default 0)\n"
    "  --tensor-id N         stochastic rounding: tensor id (default 0)\n"
    "  --step N              stochastic rounding: step (default 0)\n"
    "  -h, --help            this text\n"
    "\n"
    "Exit status: 0 done, 1 bad input or output file, 2 bad command line.\n";

#define CMD "quantize"

/* Read all of f; NULL with errno set on a read error or no memory. */
static uint8_t *read_all(FILE *f, size_t *n)
{
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return NULL;
    for (;;) {
        if (len == cap) {
            uint8_t *nb = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                errno = ENOMEM;
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
        const size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f)) {
                const int e = errno ? errno : EIO;
                free(buf);
                errno = e;
                return NULL;
            }
            break;
        }
    }
    *n = len;
    return buf;
}

/* Write n bytes to fd; 0 on success, else errno. */
static int write_fd(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        const ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Write buf to path without ever leaving it half-written: a temporary file in the same
 * folder, fsync, rename. Paths that exist and are not regular files (devices, FIFOs)
 * are written directly, since renaming over them would replace the node. Returns 1, or
 * 0 after printing an error that names path. */
static int write_output(const char *path, const uint8_t *buf, size_t n)
{
    struct stat st;
    char *target = NULL;
    mode_t mode;

    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            cli_error(CMD, "cannot write '%s': %s", path, strerror(EISDIR));
            return 0;
        }
        if (!S_ISREG(st.st_mode)) {
            FILE *f = fopen(path, "wb");
            int ok = f && fwrite(buf, 1, n, f) == n;
            const int e = errno;
            if (f && fclose(f) != 0)
                ok = 0;
            if (!ok) {
                cli_error(CMD, "cannot write '%s': %s", path, strerror(e ? e : EIO));
                return 0;
            }
            return 1;
        }
        mode = st.st_mode & 07777;
        target = realpath(path, NULL); /* write through a symbolic link, not over it */
    } else {
        const mode_t mask = umask(0);
        umask(mask);
        mode = 0666 & ~mask;
    }
    const char *dst = target ? target : path;
    const size_t len = strlen(dst);
    char *tmp = malloc(len + 8);
    if (!tmp) {
        free(target);
        cli_error(CMD, "cannot write '%s': %s", path, strerror(ENOMEM));
        return 0;
    }
    memcpy(tmp, dst, len);
    memcpy(tmp + len, ".XXXXXX", 8);
    int err = 0;
    const int fd = mkstemp(tmp);
    if (fd < 0) {
        cli_error(CMD, "cannot create '%s' (temporary file beside it): %s", path, strerror(errno));
        free(tmp);
        free(target);
        return 0;
    }
    if ((err = write_fd(fd, buf, n)) == 0 && fchmod(fd, mode) != 0)
        err = errno;
    if (err == 0 && fsync(fd) != 0 && errno != EINVAL)
        err = errno;
    if (close(fd) != 0 && err == 0)
        err = errno;
    if (err == 0 && rename(tmp, dst) != 0)
        err = errno;
    if (err != 0) {
        unlink(tmp);
        cli_error(CMD, "cannot write '%s': %s", path, strerror(err));
    }
    free(tmp);
    free(target);
    return err == 0;
}

static json_t *report(int e, dlu_format fmt, dlu_round mode, uint64_t seed, uint32_t id, uint32_t step,
                      const char *scale, int calibrated, const dlu_stats *st)
{
    json_t *j = json_object(), *h = json_array();
    json_object_set_new(j, "exp", json_integer(e));
    json_object_set_new(j, "bits", json_integer(dlu_format_bits(fmt)));
    json_object_set_new(j, "format", json_string(dlu_format_name(fmt)));
    json_object_set_new(j, "round", json_string(dlu_round_name(mode)));
    if (mode == DLU_ROUND_STOCHASTIC) {
        json_object_set_new(j, "seed", json_integer((json_int_t)seed));
        json_object_set_new(j, "tensor_id", json_integer(id));
        json_object_set_new(j, "step", json_integer(step));
    }
    json_object_set_new(j, "auto", json_boolean(scale != NULL));
    if (scale) {
        json_object_set_new(j, "scale", json_string(scale));
        json_object_set_new(j, "calibrated", json_boolean(calibrated));
    }
    json_object_set_new(j, "count", json_integer((json_int_t)st->count));
    json_object_set_new(j, "zeros", json_integer((json_int_t)st->zeros));
    json_object_set_new(j, "nan", json_integer((json_int_t)st->nan));
    json_object_set_new(j, "overflow", json_integer((json_int_t)st->overflow));
    json_object_set_new(j, "underflow", json_integer((json_int_t)st->underflow));
    for (int i = 0; i < DLU_STATS_NBINS; i++) {
        if (!st->hist[i])
            continue;
        json_t *b = json_object();
        json_object_set_new(b, "k", json_integer(i + DLU_STATS_KMIN));
        json_object_set_new(b, "count", json_integer((json_int_t)st->hist[i]));
        json_array_append_new(h, b);
    }
    json_object_set_new(j, "histogram", h);
    return j;
}

int cmd_quantize(int argc, char **argv)
{
    enum { O_BITS = 256, O_EXP, O_AUTO, O_SCALE, O_ROUND, O_SEED, O_ID, O_STEP };
    static const struct option opts[] = {
        {"bits", required_argument, 0, O_BITS},   {"exp", required_argument, 0, O_EXP},
        {"auto", no_argument, 0, O_AUTO},         {"scale", required_argument, 0, O_SCALE},
        {"round", required_argument, 0, O_ROUND}, {"seed", required_argument, 0, O_SEED},
        {"tensor-id", required_argument, 0, O_ID}, {"step", required_argument, 0, O_STEP},
        {"help", no_argument, 0, 'h'},            {0, 0, 0, 0}};
    const char *exp_arg = NULL, *scale_arg = NULL;
    dlu_format fmt = DLU_FMT_DFP8;
    dlu_round mode = DLU_ROUND_NEAREST;
    dlu_scale_cfg scfg;
    long long seed = 0, id = 0, step = 0;
    int use_auto = 0;

    dlu_scale_cfg_default(&scfg);
    optind = 1;
    argv[0] = "dlu " CMD;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_BITS:
            if (!strcmp(optarg, "8"))
                fmt = DLU_FMT_DFP8;
            else if (!strcmp(optarg, "16"))
                fmt = DLU_FMT_DFP16;
            else {
                cli_error(CMD, "--bits '%s': expected 8 or 16", optarg);
                return 2;
            }
            break;
        case O_EXP: exp_arg = optarg; break;
        case O_AUTO: use_auto = 1; break;
        case O_SCALE:
            if (dlu_scale_parse(optarg, &scfg) != DLU_OK) {
                cli_error(CMD, "--scale: %s", dlu_last_error());
                return 2;
            }
            scale_arg = optarg;
            break;
        case O_ROUND:
            if (!strcmp(optarg, "nearest"))
                mode = DLU_ROUND_NEAREST;
            else if (!strcmp(optarg, "stochastic"))
                mode = DLU_ROUND_STOCHASTIC;
            else {
                cli_error(CMD, "--round '%s': expected nearest or stochastic", optarg);
                return 2;
            }
            break;
        case O_SEED:
            if (!cli_int(CMD, "--seed", optarg, 0, INT64_MAX, &seed)) return 2;
            break;
        case O_ID:
            if (!cli_int(CMD, "--tensor-id", optarg, 0, UINT32_MAX, &id)) return 2;
            break;
        case O_STEP:
            if (!cli_int(CMD, "--step", optarg, 0, UINT32_MAX, &step)) return 2;
            break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_usage_error(CMD);
        }
    }
    if (argc - optind != 2) {
        if (argc - optind > 2)
            cli_error(CMD, "unexpected argument '%s'", argv[optind + 2]);
        else
            cli_error(CMD, "expected IN and OUT (files, or '-' for standard input/output)");
        return cli_usage_error(CMD);
    }
    const char *in_path = argv[optind], *out_path = argv[optind + 1];
    if (exp_arg && use_auto) {
        cli_error(CMD, "--exp and --auto exclude each other: give one");
        return cli_usage_error(CMD);
    }
    if (!exp_arg && !use_auto) {
        cli_error(CMD, "one of --exp E or --auto is required");
        return cli_usage_error(CMD);
    }
    if (scale_arg && !use_auto) {
        cli_error(CMD, "--scale '%s' needs --auto (with --exp the exponent is given)", scale_arg);
        return cli_usage_error(CMD);
    }
    long long e = 0;
    if (exp_arg) {
        char opt[64];
        snprintf(opt, sizeof opt, "--exp (for %d bits)", dlu_format_bits(fmt));
        if (!cli_int(CMD, opt, exp_arg, DLU_EXP_MIN, dlu_format_exp_max(fmt), &e))
            return 2;
    }

    /* Everything read and checked before anything is written. */
    int rc = 1;
    size_t nbytes = 0;
    uint8_t *in = NULL, *out = NULL;
    float *x = NULL;
    dlu_scale_state *state = NULL;
    json_t *j = NULL;
    char in_name[PATH_MAX + 8];
    if (strcmp(in_path, "-"))
        snprintf(in_name, sizeof in_name, "'%s'", in_path);
    else
        snprintf(in_name, sizeof in_name, "standard input");
    {
        FILE *f = strcmp(in_path, "-") ? fopen(in_path, "rb") : stdin;
        if (!f) {
            cli_error(CMD, "cannot open '%s': %s", in_path, strerror(errno));
            goto done;
        }
        errno = 0;
        in = read_all(f, &nbytes);
        const int err = errno;
        if (f != stdin)
            fclose(f);
        if (!in) {
            cli_error(CMD, "cannot read %s: %s", in_name, strerror(err));
            goto done;
        }
    }
    if (nbytes % 4 != 0) {
        cli_error(CMD, "%s: %zu bytes is not a multiple of 4 (expected raw little-endian float32)", in_name, nbytes);
        goto done;
    }
    const size_t n = nbytes / 4, esize = dlu_format_nbytes(fmt);
    x = malloc(n ? n * sizeof *x : 1);
    out = malloc(n ? n * esize : 1);
    if (!x || !out) {
        cli_error(CMD, "out of memory for %zu values", n);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = in + 4 * i;
        x[i] = dlu_f32_from_bits((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
    }

    char spec[256] = "";
    int calibrated = 0;
    dlu_stats st;
    if (use_auto) {
        /* The histogram does not depend on the exponent: one pass collects it, the
         * policy calibrates on it, the second pass quantizes. */
        dlu_status s = dlu_scale_state_new(&scfg, fmt, &state);
        if (s != DLU_OK) {
            cli_fail(CMD, "--scale", s);
            goto done;
        }
        dlu_stats_clear(&st);
        s = dlu_quantize_f32(x, n, dlu_scale_exp(state), fmt, DLU_ROUND_NEAREST, 0, 0, 0, 0, out, &st);
        if (s != DLU_OK) {
            cli_fail(CMD, "quantize", s);
            goto done;
        }
        e = dlu_scale_calibrate(state, &st);
        calibrated = dlu_scale_calibrated(state);
        dlu_scale_format_spec(&scfg, spec, sizeof spec);
    }
    dlu_stats_clear(&st);
    dlu_status s = dlu_quantize_f32(x, n, (int)e, fmt, mode, (uint64_t)seed, (uint32_t)id, (uint32_t)step, 0, out, &st);
    if (s != DLU_OK) {
        cli_fail(CMD, "quantize", s);
        goto done;
    }
    if (esize == 2) /* int16 in host order -> little-endian bytes, in place */
        for (size_t i = 0; i < n; i++) {
            int16_t v;
            memcpy(&v, out + 2 * i, 2);
            out[2 * i] = (uint8_t)((uint16_t)v & 0xFF);
            out[2 * i + 1] = (uint8_t)((uint16_t)v >> 8);
        }

    if (!strcmp(out_path, "-")) {
        if (fwrite(out, esize, n, stdout) != n || fflush(stdout) != 0) {
            cli_error(CMD, "writing standard output: %s", strerror(errno ? errno : EIO));
            goto done;
        }
    } else if (!write_output(out_path, out, n * esize)) {
        goto done;
    }

    j = report((int)e, fmt, mode, (uint64_t)seed, (uint32_t)id, (uint32_t)step, use_auto ? spec : NULL, calibrated,
               &st);
    FILE *jf = strcmp(out_path, "-") ? stdout : stderr;
    if (json_dumpf(j, jf, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0 || fputc('\n', jf) == EOF || fflush(jf) != 0) {
        cli_error(CMD, "cannot write the JSON report: %s", strerror(errno ? errno : EIO));
        goto done;
    }
    rc = 0;
done:
    json_decref(j);
    dlu_scale_state_free(state);
    free(in);
    free(out);
    free(x);
    return rc;
}
