/* test_hwcfg.c -- CUnit tests of sim/hwcfg.c, the simulated core's parameters.
 *
 * What it checks: the defaults are those of sim/hwcfg.def; examples/hw/dlu-base.ini loads
 * to the defaults and is byte for byte what dlusim_hwcfg_write prints for them (so the
 * .def stays the one source of truth: regenerate the example when the table changes);
 * write then load round-trips random in-range values of every key exactly; the reader's
 * accepted variations (comments, inline ';' comments, CRLF, indentation, absent keys);
 * and every error, with the message checked for the file:line, the key and what was
 * expected.
 *
 * The source tree is found from argv[1], else $top_srcdir, else $srcdir, else ".".
 *
 * What it is not: a test of what the parameters cost (hw_model/'s tests). */
#include <CUnit/Basic.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlu/status.h"
#include "sim/hwcfg.h"

static const char *g_srcdir = ".";
static const char *const g_tmp = "test_hwcfg-tmp.ini";

#define CHECK_MSG(what)                                                                            \
    do {                                                                                           \
        const char *m_ = dlu_last_error();                                                         \
        if (!strstr(m_, (what)))                                                                   \
            printf("\n    %s:%d: message \"%s\" lacks \"%s\" ", __FILE__, __LINE__, m_, (what));    \
        CU_ASSERT_PTR_NOT_NULL(strstr(m_, (what)));                                                \
    } while (0)

static uint64_t g_rng = 0x4857C0F1600DD00Dull;
static uint64_t rnd64(void) /* splitmix64: fixed seed, reproducible */
{
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return 0;
    fputs(text, f);
    return fclose(f) == 0;
}

/* Load text as a config; returns the status. */
static dlu_status load_text(const char *text, dlusim_hwcfg *cfg)
{
    if (!write_file(g_tmp, text)) {
        CU_FAIL("cannot write the temporary config");
        return DLU_EIO;
    }
    return dlusim_hwcfg_load(g_tmp, cfg);
}

static int same_cfg(const dlusim_hwcfg *a, const dlusim_hwcfg *b, int verbose)
{
    int same = 1;
#define DLU_HW(sec, key, type, unit, def, lo, hi, comment)                                  \
    if (memcmp(&a->key, &b->key, sizeof a->key)) {                                         \
        same = 0;                                                                          \
        if (verbose)                                                                       \
            printf("\n    %s: %.17g != %.17g ", #key, (double)a->key, (double)b->key);     \
    }
#include "sim/hwcfg.def"
#undef DLU_HW
    return same;
}

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + len, 1, cap - len, f)) > 0) {
        len += r;
        if (len == cap) {
            char *p = realloc(buf, cap *= 2);
            if (!p) {
                free(buf);
                buf = NULL;
            }
            buf = p;
        }
    }
    fclose(f);
    *n = len;
    return buf;
}

static void base_path(char *buf, size_t n) { snprintf(buf, n, "%s/examples/hw/dlu-base.ini", g_srcdir); }

/* ------------------------------------------------------------------------------------ */

static void test_defaults(void)
{
    dlusim_hwcfg c;
    memset(&c, 0xA5, sizeof c);
    dlusim_hwcfg_defaults(&c);
#define DLU_HW(sec, key, type, unit, def, lo, hi, comment) CU_ASSERT(c.key == (DLUSIM_HW_TYPE_##type)(def));
#include "sim/hwcfg.def"
#undef DLU_HW
    CU_ASSERT_EQUAL(c.n_dpu, 16);
    CU_ASSERT_EQUAL(c.local_mem_kib, 512);
    CU_ASSERT_DOUBLE_EQUAL(c.e_hbm_byte_pj, 31.2, 0);
    /* derived quantities */
    CU_ASSERT_EQUAL(dlusim_hwcfg_macs_per_lane(&c, 32), 1);
    CU_ASSERT_EQUAL(dlusim_hwcfg_macs_per_lane(&c, 16), 2);
    CU_ASSERT_EQUAL(dlusim_hwcfg_macs_per_lane(&c, 8), 4);
    CU_ASSERT_DOUBLE_EQUAL(dlusim_hwcfg_hbm_bytes_per_cycle(&c), 1024.0, 1e-9);
    CU_ASSERT_EQUAL(dlusim_hwcfg_hbm_latency_cycles(&c), 100);
}

static void test_base_ini_is_defaults(void)
{
    char path[4096];
    base_path(path, sizeof path);
    dlusim_hwcfg d, c;
    dlusim_hwcfg_defaults(&d);
    dlu_status st = dlusim_hwcfg_load(path, &c);
    if (st != DLU_OK)
        printf("\n    %s ", dlu_last_error());
    CU_ASSERT_EQUAL_FATAL(st, DLU_OK);
    CU_ASSERT(same_cfg(&c, &d, 1));
}

static void test_base_ini_is_writer_output(void)
{
    char path[4096];
    base_path(path, sizeof path);
    dlusim_hwcfg d;
    dlusim_hwcfg_defaults(&d);
    FILE *f = fopen(g_tmp, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(dlusim_hwcfg_write(&d, f), DLU_OK);
    fclose(f);
    size_t na = 0, nb = 0;
    char *a = slurp(path, &na), *b = slurp(g_tmp, &nb);
    CU_ASSERT_PTR_NOT_NULL(a);
    CU_ASSERT_PTR_NOT_NULL(b);
    if (a && b) {
        int same = na == nb && !memcmp(a, b, na);
        if (!same) {
            size_t i = 0;
            while (i < na && i < nb && a[i] == b[i])
                i++;
            printf("\n    %s differs from dlusim_hwcfg_write(defaults) at byte %zu (regenerate it) ", path, i);
        }
        CU_ASSERT(same);
    }
    free(a);
    free(b);
}

/* Random in-range values for every key; doubles with all 52 mantissa bits in use. */
static void test_round_trip(void)
{
    for (int it = 0; it < 50; it++) {
        dlusim_hwcfg c, r;
        dlusim_hwcfg_defaults(&c);
#define DLU_HW(sec, key, type, unit, def, lo, hi, comment)                                              \
    if (#type[0] == 'I') {                                                                              \
        uint64_t span_ = (uint64_t)((hi) - (lo)) + 1;                                                   \
        c.key = (DLUSIM_HW_TYPE_##type)((lo) + (double)(rnd64() % span_));                              \
    } else {                                                                                            \
        double u_ = (double)(rnd64() >> 11) / 9007199254740992.0;                                      \
        c.key = (DLUSIM_HW_TYPE_##type)((lo) + u_ * ((hi) - (lo)));                                     \
    }
#include "sim/hwcfg.def"
#undef DLU_HW
        FILE *f = fopen(g_tmp, "wb");
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        CU_ASSERT_EQUAL(dlusim_hwcfg_write(&c, f), DLU_OK);
        fclose(f);
        dlu_status st = dlusim_hwcfg_load(g_tmp, &r);
        if (st != DLU_OK)
            printf("\n    %s ", dlu_last_error());
        CU_ASSERT_EQUAL(st, DLU_OK);
        CU_ASSERT(same_cfg(&c, &r, 1));
    }
}

static void test_accepted_variations(void)
{
    dlusim_hwcfg c, d;
    dlusim_hwcfg_defaults(&d);
    /* empty file: the defaults */
    CU_ASSERT_EQUAL(load_text("", &c), DLU_OK);
    CU_ASSERT(same_cfg(&c, &d, 1));
    /* comments, inline ';' comment, CRLF, indentation, blank lines, repeated section */
    const char *text = "# a comment\r\n; another\r\n[core]\r\n  n_dpu = 4 ; four DPUs\r\n\r\n"
                       "\tlocal_mem_kib=256\r\n[hbm]\r\nhbm_latency_ns = 1.5e2\r\n[core]\r\nclock_mhz = 2000.5\r\n";
    dlu_status st = load_text(text, &c);
    if (st != DLU_OK)
        printf("\n    %s ", dlu_last_error());
    CU_ASSERT_EQUAL(st, DLU_OK);
    CU_ASSERT_EQUAL(c.n_dpu, 4);
    CU_ASSERT_EQUAL(c.local_mem_kib, 256);
    CU_ASSERT_DOUBLE_EQUAL(c.hbm_latency_ns, 150.0, 0);
    CU_ASSERT_DOUBLE_EQUAL(c.clock_mhz, 2000.5, 0);
    CU_ASSERT_EQUAL(c.dpe_per_dpu, d.dpe_per_dpu); /* absent: default */
    /* the range ends themselves are in range */
    CU_ASSERT_EQUAL(load_text("[core]\nn_dpu = 1024\nlocal_mem_kib = 4\n[energy]\ne_hbm_byte_pj = 0\n", &c), DLU_OK);
    CU_ASSERT_EQUAL(c.n_dpu, 1024);
    /* the small example loads */
    char path[4096];
    snprintf(path, sizeof path, "%s/examples/hw/dlu-small.ini", g_srcdir);
    st = dlusim_hwcfg_load(path, &c);
    if (st != DLU_OK)
        printf("\n    %s ", dlu_last_error());
    CU_ASSERT_EQUAL(st, DLU_OK);
    CU_ASSERT_EQUAL(c.n_dpu, 4);
    CU_ASSERT_EQUAL(c.local_mem_kib, 256);
}

/* Each bad file: the status and every fragment the message must contain. */
static void test_errors(void)
{
    static const struct {
        const char *text;
        dlu_status st;
        const char *want[4];
    } cases[] = {
        {"[core]\nn_dpu = 4\nfoo = 1\n", DLU_EFORMAT, {":3:", "unknown key 'foo' in [core]", "n_dpu", "local_mem_kib"}},
        {"[core]\nhbm_channels = 4\n", DLU_EFORMAT, {":2:", "'hbm_channels'", "in [core]", "belongs in [hbm]"}},
        {"hbm_channels = 4\n", DLU_EFORMAT, {":1:", "outside any section", "belongs in [hbm]", NULL}},
        {"\n\n[cores]\nn_dpu = 4\n", DLU_EFORMAT, {":3:", "unknown section [cores]", "[core]", "[energy]"}},
        {"[core]\nn_dpu = many\n", DLU_EFORMAT, {":2:", "n_dpu = 'many'", "not a number", "integer"}},
        {"[core]\nn_dpu =\n", DLU_EFORMAT, {":2:", "n_dpu", "not a number", NULL}},
        {"[core]\nn_dpu = 1.5\n", DLU_EFORMAT, {":2:", "n_dpu = '1.5'", "expected an integer", "fraction"}},
        {"[core]\nn_dpu = 12abc\n", DLU_EFORMAT, {":2:", "n_dpu = '12abc'", "unexpected text", NULL}},
        {"[hbm]\nhbm_latency_ns = 100 ns\n", DLU_EFORMAT, {":2:", "hbm_latency_ns = '100 ns'", "unexpected text", NULL}},
        {"[core]\nn_dpu = 0\n", DLU_EFORMAT, {":2:", "n_dpu = 0 is out of range", "1 .. 1024 count", NULL}},
        {"[core]\nn_dpu = 99999999999999999999\n", DLU_EFORMAT, {":2:", "out of range", "1 .. 1024", NULL}},
        {"[core]\nclock_mhz = 0.5\n", DLU_EFORMAT, {":2:", "clock_mhz = 0.5 is out of range", "1 .. 100000 MHz", NULL}},
        {"[core]\nclock_mhz = nan\n", DLU_EFORMAT, {":2:", "clock_mhz", "out of range", NULL}},
        {"[energy]\ne_mac_int8_pj = -0.1\n", DLU_EFORMAT, {":2:", "e_mac_int8_pj", "0 .. 1000000 pJ/MAC", NULL}},
        {"[core]\nn_dpu = 2\n\n[hbm]\n[core]\nn_dpu = 3\n", DLU_EFORMAT, {":6:", "'n_dpu' given twice", "first at line 2", NULL}},
        {"[core]\nn_dpu 4\n", DLU_EFORMAT, {":2:", "syntax error", NULL, NULL}},
        {"[core\nn_dpu = 4\n", DLU_EFORMAT, {":1:", "syntax error", NULL, NULL}},
        /* the first error wins: a syntax error after a bad key */
        {"[core]\nfoo = 1\nbar\n", DLU_EFORMAT, {":2:", "unknown key 'foo'", NULL, NULL}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dlusim_hwcfg c;
        dlu_status st = load_text(cases[i].text, &c);
        if (st != cases[i].st)
            printf("\n    case %zu: status %d, expected %d (%s) ", i, st, cases[i].st, dlu_last_error());
        CU_ASSERT_EQUAL(st, cases[i].st);
        CHECK_MSG(g_tmp);
        for (int w = 0; w < 4 && cases[i].want[w]; w++)
            CHECK_MSG(cases[i].want[w]);
    }
    /* missing file */
    dlusim_hwcfg c;
    CU_ASSERT_EQUAL(dlusim_hwcfg_load("no/such/dir/hw.ini", &c), DLU_EIO);
    CHECK_MSG("no/such/dir/hw.ini");
    CHECK_MSG("cannot open");
    /* a directory opens but cannot be read */
    CU_ASSERT_NOT_EQUAL(dlusim_hwcfg_load(".", &c), DLU_OK);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        g_srcdir = argv[1];
    else if (getenv("top_srcdir"))
        g_srcdir = getenv("top_srcdir");
    else if (getenv("srcdir"))
        g_srcdir = getenv("srcdir");
    static const struct {
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {"defaults are hwcfg.def's", test_defaults},
        {"dlu-base.ini loads to the defaults", test_base_ini_is_defaults},
        {"dlu-base.ini is the writer's output for the defaults", test_base_ini_is_writer_output},
        {"write then load round-trips exactly", test_round_trip},
        {"comments, CRLF, indentation, absent keys", test_accepted_variations},
        {"every error names file:line, key and what was expected", test_errors},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("hwcfg", NULL, NULL);
    int ok = s != NULL;
    for (size_t i = 0; ok && i < sizeof tests / sizeof tests[0]; i++)
        ok = CU_add_test(s, tests[i].name, tests[i].fn) != NULL;
    if (!ok) {
        fprintf(stderr, "test_hwcfg: cannot set up CUnit: %s\n", CU_get_error_msg());
        CU_cleanup_registry();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_ErrorCode err = CU_get_error();
    CU_cleanup_registry();
    remove(g_tmp);
    return failed != 0 || err != CUE_SUCCESS ? 1 : 0;
}
