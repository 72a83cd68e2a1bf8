/* test_net.c -- CUnit tests for nets as data (include/dlu/net.h): the .net parser, shape
 * inference, parameter bookkeeping and the bind/forward/backward entry points.
 *
 * Parses the example nets in examples/nets/ (found through $top_srcdir, else the current
 * folder) and checks every layer's shape, the parameter counts and MACs against numbers
 * worked out by hand; runs a table of malformed nets, each of which must fail with
 * DLU_EFORMAT (DLU_EIO for an unreadable file) and a message that starts with
 * "origin:LINE: " and names the problem; and drives the mlp on the cpu backend to check
 * the argument checks of dlu_net_forward() and that the seeded initialisation is
 * reproducible. It does NOT check kernel numerics (test_ops.c) nor training (the shell
 * tests). Temporary files live in a private mkdtemp folder removed at the end. */
#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700 /* mkdtemp, nftw */
#endif

#include <CUnit/Basic.h>

#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dlu/backend.h"
#include "dlu/net.h"
#include "dlu/status.h"
#include "dlu/tensor.h"

static char tmpdir[PATH_MAX];

/* ---- helpers ------------------------------------------------------------------------- */

static const char *srcdir(void)
{
    const char *s = getenv("top_srcdir");
    return s && *s ? s : ".";
}

static const char *example(char *dst, const char *name)
{
    int k = snprintf(dst, PATH_MAX, "%s/examples/nets/%s", srcdir(), name);
    CU_ASSERT_FATAL(k > 0 && k < PATH_MAX);
    return dst;
}

static const char *tpath(char *dst, const char *name)
{
    int k = snprintf(dst, PATH_MAX, "%s/%s", tmpdir, name);
    CU_ASSERT_FATAL(k > 0 && k < PATH_MAX);
    return dst;
}

static int spit(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    int ok = fwrite(data, 1, n, f) == n;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = calloc(1, 1 << 20);
    if (buf != NULL && fread(buf, 1, (1 << 20) - 1, f) == 0 && ferror(f)) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

/* The message must start with "origin:line: " and contain phrase. Prints why not. */
static int message_ok(const char *what, const char *origin, int line, const char *phrase)
{
    char pos[PATH_MAX + 32];
    snprintf(pos, sizeof pos, "%s:%d: ", origin, line);
    const char *msg = dlu_last_error();
    int ok = strncmp(msg, pos, strlen(pos)) == 0 && strstr(msg, phrase) != NULL;
    if (!ok)
        printf("\n    FAIL %s: message \"%s\"\n         wanted it to start with \"%s\" and contain \"%s\"", what,
               msg, pos, phrase);
    return ok;
}

/* ---- the example nets ---------------------------------------------------------------- */

typedef struct layer_want {
    const char *name;
    dlu_op op;
    int c, h, w;
} layer_want;

typedef struct net_want {
    const char *file;
    const char *name;
    int nlayers;
    const layer_want *layers;
    int nparams;     /* tensors */
    int64_t elems;   /* parameters */
    int64_t macs;    /* per sample, forward */
} net_want;

static const layer_want mlp_layers[] = {
    {"fc1", DLU_OP_LINEAR, 256, 1, 1},  {"relu1", DLU_OP_RELU, 256, 1, 1},
    {"fc2", DLU_OP_LINEAR, 256, 1, 1},  {"relu2", DLU_OP_RELU, 256, 1, 1},
    {"fc3", DLU_OP_LINEAR, 10, 1, 1},   {"loss", DLU_OP_SOFTMAX_XENT, 10, 1, 1},
};

static const layer_want cnn_layers[] = {
    {"conv1", DLU_OP_CONV2D, 32, 28, 28}, {"relu1", DLU_OP_RELU, 32, 28, 28},
    {"pool1", DLU_OP_MAXPOOL, 32, 14, 14}, {"conv2", DLU_OP_CONV2D, 64, 14, 14},
    {"relu2", DLU_OP_RELU, 64, 14, 14},  {"pool2", DLU_OP_MAXPOOL, 64, 7, 7},
    {"flat", DLU_OP_FLATTEN, 3136, 1, 1}, {"fc1", DLU_OP_LINEAR, 256, 1, 1},
    {"relu3", DLU_OP_RELU, 256, 1, 1},   {"fc2", DLU_OP_LINEAR, 10, 1, 1},
    {"loss", DLU_OP_SOFTMAX_XENT, 10, 1, 1},
};

static const layer_want lenet5_layers[] = {
    {"c1", DLU_OP_CONV2D, 6, 28, 28},   {"relu1", DLU_OP_RELU, 6, 28, 28},
    {"s2", DLU_OP_MAXPOOL, 6, 14, 14},  {"c3", DLU_OP_CONV2D, 16, 10, 10},
    {"relu3", DLU_OP_RELU, 16, 10, 10}, {"s4", DLU_OP_MAXPOOL, 16, 5, 5},
    {"flat", DLU_OP_FLATTEN, 400, 1, 1}, {"f5", DLU_OP_LINEAR, 120, 1, 1},
    {"relu5", DLU_OP_RELU, 120, 1, 1},  {"f6", DLU_OP_LINEAR, 84, 1, 1},
    {"relu6", DLU_OP_RELU, 84, 1, 1},   {"out", DLU_OP_LINEAR, 10, 1, 1},
    {"loss", DLU_OP_SOFTMAX_XENT, 10, 1, 1},
};

/* Parameter counts by hand:
 *   mlp:    784*256+256 + 256*256+256 + 256*10+10                              = 269322
 *   cnn:    32*1*25+32 + 64*32*25+64 + 3136*256+256 + 256*10+10 = 832+51264+803072+2570 = 857738
 *   lenet5: 6*1*25+6 + 16*6*25+16 + 400*120+120 + 120*84+84 + 84*10+10
 *         = 156 + 2416 + 48120 + 10164 + 850                                     = 61706
 * MACs per sample:
 *   mlp:    784*256 + 256*256 + 256*10                                           = 268800
 *   cnn:    32*28*28*25 + 64*14*14*32*25 + 3136*256 + 256*10
 *         = 627200 + 10035200 + 802816 + 2560                                    = 11467776
 *   lenet5: 6*28*28*25 + 16*10*10*6*25 + 400*120 + 120*84 + 84*10
 *         = 117600 + 240000 + 48000 + 10080 + 840                                = 416520 */
static const net_want examples[] = {
    {"mlp.net", "mlp", 6, mlp_layers, 6, 269322, 268800},
    {"cnn.net", "cnn", 11, cnn_layers, 8, 857738, 11467776},
    {"lenet5.net", "lenet5", 13, lenet5_layers, 10, 61706, 416520},
};

static void check_net(const dlu_net *net, const net_want *e)
{
    CU_ASSERT_STRING_EQUAL(dlu_net_name(net), e->name);
    CU_ASSERT_EQUAL(dlu_net_nlayers(net), e->nlayers);
    int c, h, w;
    dlu_net_input_shape(net, &c, &h, &w);
    CU_ASSERT(c == 1 && h == 28 && w == 28);
    for (int i = 0; i < e->nlayers && i < dlu_net_nlayers(net); i++) {
        const layer_want *l = &e->layers[i];
        dlu_net_layer_shape(net, i, &c, &h, &w);
        int ok = strcmp(dlu_net_layer_name(net, i), l->name) == 0 && dlu_net_layer_op(net, i) == l->op &&
                 c == l->c && h == l->h && w == l->w;
        if (!ok)
            printf("\n    FAIL %s layer %d: got [%s] %s %dx%dx%d, wanted [%s] %s %dx%dx%d", e->file, i,
                   dlu_net_layer_name(net, i), dlu_op_name(dlu_net_layer_op(net, i)), c, h, w, l->name,
                   dlu_op_name(l->op), l->c, l->h, l->w);
        CU_ASSERT(ok);
    }
    CU_ASSERT_EQUAL(dlu_net_nparams(net), e->nparams);
    CU_ASSERT_EQUAL(dlu_net_nparam_elems(net), e->elems);
    CU_ASSERT_EQUAL(dlu_net_forward_macs(net), e->macs);
    CU_ASSERT_EQUAL(dlu_net_classes(net), 10);
    CU_ASSERT_EQUAL(dlu_net_max_batch(net), 0);
    CU_ASSERT_PTR_NULL(dlu_net_backend(net));
    /* The sum of the parameter shapes is the parameter count. */
    int64_t total = 0, shape[DLU_MAX_DIMS];
    for (int i = 0; i < dlu_net_nparams(net); i++) {
        int nd = dlu_net_param_shape(net, i, shape);
        int64_t n = 1;
        for (int d = 0; d < nd; d++)
            n *= shape[d];
        total += n;
    }
    CU_ASSERT_EQUAL(total, e->elems);
    if (dlu_net_nparam_elems(net) != e->elems)
        printf("\n    FAIL %s: %lld parameters, wanted %lld", e->file, (long long)dlu_net_nparam_elems(net),
               (long long)e->elems);
}

static void test_examples_load(void)
{
    for (size_t k = 0; k < sizeof examples / sizeof examples[0]; k++) {
        char path[PATH_MAX];
        dlu_net *net = NULL;
        dlu_status s = dlu_net_load(example(path, examples[k].file), &net);
        if (s != DLU_OK)
            printf("\n    FAIL load %s: %s (is $top_srcdir set?)", path, dlu_last_error());
        CU_ASSERT_EQUAL_FATAL(s, DLU_OK);
        check_net(net, &examples[k]);
        dlu_net_free(net);
    }
}

/* dlu_net_parse of the file's text gives the same net, named by the [net] name. */
static void test_examples_parse(void)
{
    for (size_t k = 0; k < sizeof examples / sizeof examples[0]; k++) {
        char path[PATH_MAX];
        char *text = slurp(example(path, examples[k].file));
        CU_ASSERT_PTR_NOT_NULL_FATAL(text);
        dlu_net *net = NULL;
        CU_ASSERT_EQUAL(dlu_net_parse(text, "some/where/other.net", &net), DLU_OK);
        if (net != NULL)
            check_net(net, &examples[k]);
        dlu_net_free(net);
        free(text);
    }
}

static void test_param_names_shapes(void)
{
    char path[PATH_MAX];
    dlu_net *net = NULL;
    CU_ASSERT_EQUAL_FATAL(dlu_net_load(example(path, "cnn.net"), &net), DLU_OK);
    static const struct {
        const char *name;
        int nd;
        int64_t shape[4];
    } want[] = {
        {"conv1.weight", 4, {32, 1, 5, 5}}, {"conv1.bias", 1, {32}},
        {"conv2.weight", 4, {64, 32, 5, 5}}, {"conv2.bias", 1, {64}},
        {"fc1.weight", 2, {256, 3136}},    {"fc1.bias", 1, {256}},
        {"fc2.weight", 2, {10, 256}},      {"fc2.bias", 1, {10}},
    };
    CU_ASSERT_EQUAL_FATAL(dlu_net_nparams(net), 8);
    for (int i = 0; i < 8; i++) {
        int64_t shape[DLU_MAX_DIMS] = {0};
        int nd = dlu_net_param_shape(net, i, shape);
        CU_ASSERT_STRING_EQUAL(dlu_net_param_name(net, i), want[i].name);
        CU_ASSERT_EQUAL(nd, want[i].nd);
        CU_ASSERT(memcmp(shape, want[i].shape, (size_t)want[i].nd * sizeof shape[0]) == 0);
    }
    /* Before binding there are no tensors. */
    CU_ASSERT_PTR_NULL(dlu_net_param(net, 0));
    CU_ASSERT_PTR_NULL(dlu_net_grad(net, 0));
    dlu_net_free(net);
}

/* Things the format allows: comments (start of line and inline), blank lines, CRLF,
 * ':' as separator, other shape spellings, bias = false, default strides, avgpool,
 * and the default name taken from the origin's base name. */
static void test_valid_variants(void)
{
    static const char *const text =
        "; a comment\r\n"
        "# another\r\n"
        "\r\n"
        "[net]\r\n"
        "input = 3, 9, 9   ; C, H, W\r\n"
        "[conv]\r\n"
        "op = conv2d\r\n"
        "filters: 4\r\n"
        "kernel = 3\r\n"
        "bias = false\r\n"
        "[pool]\r\n"
        "op = avgpool\r\n"
        "kernel = 2\r\n"
        "[mp]\r\n"
        "op = maxpool\r\n"
        "kernel = 3\r\n"
        "stride = 1\r\n"
        "pad = 1\r\n"
        "[flat]\r\n"
        "op = flatten\r\n"
        "[fc]\r\n"
        "op = linear\r\n"
        "out = 3\r\n"
        "bias = no\r\n"
        "[loss]\r\n"
        "op = softmax_xent\r\n";
    dlu_net *net = NULL;
    dlu_status s = dlu_net_parse(text, "dir.d/variants.v2.net", &net);
    if (s != DLU_OK)
        printf("\n    FAIL: %s", dlu_last_error());
    CU_ASSERT_EQUAL_FATAL(s, DLU_OK);
    CU_ASSERT_STRING_EQUAL(dlu_net_name(net), "variants");
    int c, h, w;
    dlu_net_input_shape(net, &c, &h, &w);
    CU_ASSERT(c == 3 && h == 9 && w == 9);
    dlu_net_layer_shape(net, 0, &c, &h, &w); /* conv 3x3 stride 1 no pad: 7x7 */
    CU_ASSERT(c == 4 && h == 7 && w == 7);
    dlu_net_layer_shape(net, 1, &c, &h, &w); /* avgpool 2, stride defaults to 2: 3x3 */
    CU_ASSERT(c == 4 && h == 3 && w == 3);
    dlu_net_layer_shape(net, 2, &c, &h, &w); /* maxpool 3 stride 1 pad 1: 3x3 */
    CU_ASSERT(c == 4 && h == 3 && w == 3);
    dlu_net_layer_shape(net, 3, &c, &h, &w);
    CU_ASSERT(c == 36 && h == 1 && w == 1);
    CU_ASSERT_EQUAL(dlu_net_classes(net), 3);
    /* No biases: conv 4*3*3*3 = 108, fc 36*3 = 108. */
    CU_ASSERT_EQUAL(dlu_net_nparams(net), 2);
    CU_ASSERT_EQUAL(dlu_net_nparam_elems(net), 216);
    CU_ASSERT_STRING_EQUAL(dlu_net_param_name(net, 1), "fc.weight");
    dlu_net_free(net);

    /* A net without a trailing newline, and a stride on a conv. */
    s = dlu_net_parse("[net]\ninput=1x8x8\n[c]\nop=conv2d\nfilters=2\nkernel=3\nstride=2\npad=1\n"
                      "[l]\nop=softmax_xent", "x", &net);
    CU_ASSERT_EQUAL_FATAL(s, DLU_OK);
    dlu_net_layer_shape(net, 0, &c, &h, &w);
    CU_ASSERT(c == 2 && h == 4 && w == 4);
    CU_ASSERT_STRING_EQUAL(dlu_net_name(net), "x");
    CU_ASSERT_EQUAL(dlu_net_classes(net), 32);
    dlu_net_free(net);
}

/* ---- malformed nets ------------------------------------------------------------------- */

#define NET "[net]\ninput = 1x4x4\n"      /* lines 1-2 */
#define LOSS "[loss]\nop = softmax_xent\n" /* 2 lines */
#define FC "[fc]\nop = linear\nout = 3\n"  /* 3 lines */

typedef struct bad_net {
    const char *what;
    const char *text;
    int line;
    const char *phrase;
} bad_net;

static const bad_net bad_nets[] = {
    {"empty file", "", 1, "no [net] section"},
    {"only comments", "# nothing\n; here\n\n", 3, "no [net] section"},
    {"missing [net] (starts with a layer)", FC LOSS, 1, "before the [net] section"},
    {"layer before [net]", FC NET LOSS, 1, "layer [fc] before the [net] section"},
    {"second [net]", NET FC "[net]\ninput = 1x4x4\n" LOSS, 6, "a second [net] section"},
    {"empty [net] section", "[net]\n" FC LOSS, 1, "section [net] is empty"},
    {"[net] without input", "[net]\nname = x\n" FC LOSS, 1, "has no 'input = CxHxW'"},
    {"empty layer section", NET "[fc]\n" LOSS, 3, "section [fc] is empty"},
    {"empty last section", NET FC LOSS "[tail]\n", 8, "section [tail] is empty"},
    {"duplicate name, consecutive", NET FC "[fc]\nop = relu\n" LOSS, 6,
     "duplicate layer name [fc] (first defined at line 3)"},
    {"duplicate name, not consecutive", NET FC "[r]\nop = relu\n[fc]\nop = relu\n" LOSS, 8,
     "duplicate layer name [fc] (first defined at line 3)"},
    {"duplicate name that is also an op name", NET FC "[relu]\nop = relu\n[relu]\nop = relu\n" LOSS, 8,
     "duplicate layer name [relu]"},
    {"unknown op", NET "[fc]\nop = dense\n" LOSS, 4, "op = 'dense': unknown op"},
    {"op is case sensitive", NET "[fc]\nop = Linear\nout = 3\n" LOSS, 4, "unknown op"},
    {"op not first", NET "[fc]\nout = 3\nop = linear\n" LOSS, 4, "'out' before 'op' in layer [fc]"},
    {"no op at all", NET "[fc]\nout = 3\n" LOSS, 4, "'out' before 'op'"},
    {"op given twice", NET "[fc]\nop = linear\nop = linear\nout = 3\n" LOSS, 5, "key 'op' given twice in [fc]"},
    {"unknown key in linear", NET "[fc]\nop = linear\nout = 3\nkernel = 3\n" LOSS, 6,
     "unknown key 'kernel' in linear [fc] (allowed: op, out, bias)"},
    {"unknown key in relu", NET FC "[r]\nop = relu\nout = 3\n" LOSS, 8,
     "unknown key 'out' in relu [r] (allowed: op)"},
    {"unknown key in conv2d", NET "[c]\nop = conv2d\nfilter = 3\n" LOSS, 5,
     "unknown key 'filter' in conv2d [c] (allowed: op, filters, kernel, stride, pad, bias)"},
    {"unknown key in maxpool", NET "[p]\nop = maxpool\nkernel = 2\nbias = true\n" LOSS, 6,
     "unknown key 'bias' in maxpool [p] (allowed: op, kernel, stride, pad)"},
    {"unknown key in [net]", "[net]\ninput = 1x4x4\nbatch = 8\n" FC LOSS, 3,
     "unknown key 'batch' in section [net] (allowed: name, input)"},
    {"key given twice", NET "[fc]\nop = linear\nout = 3\nout = 4\n" LOSS, 6, "key 'out' given twice in [fc]"},
    {"input given twice", "[net]\ninput = 1x4x4\ninput = 1x4x4\n" FC LOSS, 3, "key 'input' given twice in [net]"},
    {"non-integer out", NET "[fc]\nop = linear\nout = abc\n" LOSS, 5, "out = 'abc': expected an integer in [1, "},
    {"fractional out", NET "[fc]\nop = linear\nout = 2.5\n" LOSS, 5, "out = '2.5': expected an integer"},
    {"integer with junk", NET "[fc]\nop = linear\nout = 3x\n" LOSS, 5, "out = '3x': expected an integer"},
    {"empty value", NET "[fc]\nop = linear\nout =\n" LOSS, 5, "out = '': expected an integer"},
    {"negative filters", NET "[c]\nop = conv2d\nfilters = -3\nkernel = 1\n" LOSS, 5,
     "filters = '-3': expected an integer in [1, 65536]"},
    {"zero out", NET "[fc]\nop = linear\nout = 0\n" LOSS, 5, "out = '0': expected an integer in [1, 16777216]"},
    {"zero kernel", NET "[p]\nop = maxpool\nkernel = 0\n" LOSS, 5, "kernel = '0': expected an integer in [1, 64]"},
    {"zero stride", NET "[p]\nop = maxpool\nkernel = 2\nstride = 0\n" LOSS, 6,
     "stride = '0': expected an integer in [1, 64]"},
    {"negative pad", NET "[c]\nop = conv2d\nfilters = 2\nkernel = 1\npad = -1\n" LOSS, 7,
     "pad = '-1': expected an integer in [0, 64]"},
    {"huge out", NET "[fc]\nop = linear\nout = 99999999999999999999\n" LOSS, 5,
     "out = '99999999999999999999': expected an integer"},
    {"out just above the limit", NET "[fc]\nop = linear\nout = 16777217\n" LOSS, 5, "expected an integer in"},
    {"huge kernel", NET "[c]\nop = conv2d\nfilters = 2\nkernel = 65\n" LOSS, 6, "kernel = '65'"},
    {"bad bias", NET "[fc]\nop = linear\nout = 3\nbias = maybe\n" LOSS, 6, "bias = 'maybe': expected true or false"},
    {"input 1x28", "[net]\ninput = 1x28\n" FC LOSS, 2, "input = '1x28': expected three positive sizes"},
    {"input 0x28x28", "[net]\ninput = 0x28x28\n" FC LOSS, 2, "expected three positive sizes C x H x W"},
    {"input negative", "[net]\ninput = 1x-28x28\n" FC LOSS, 2, "expected three positive sizes"},
    {"input letters", "[net]\ninput = axbxc\n" FC LOSS, 2, "expected three positive sizes"},
    {"input empty", "[net]\ninput =\n" FC LOSS, 2, "expected three positive sizes"},
    {"input too big", "[net]\ninput = 1x65537x1\n" FC LOSS, 2, "expected three positive sizes"},
    {"input four numbers", "[net]\ninput = 1x28x28x3\n" FC LOSS, 2, "unexpected text after C x H x W"},
    {"input trailing text", "[net]\ninput = 1x28x28 pixels\n" FC LOSS, 2, "unexpected text after"},
    {"linear without out", NET "[fc]\nop = linear\nbias = true\n" LOSS, 3, "linear layer [fc] needs 'out = N'"},
    {"conv2d without filters", NET "[c]\nop = conv2d\nkernel = 3\n" LOSS, 3,
     "conv2d layer [c] needs 'filters = N' and 'kernel = K'"},
    {"conv2d without kernel", NET "[c]\nop = conv2d\nfilters = 3\n" LOSS, 3, "needs 'filters = N' and 'kernel = K'"},
    {"maxpool without kernel", NET "[p]\nop = maxpool\nstride = 1\n" LOSS, 3, "maxpool layer [p] needs 'kernel = K'"},
    {"avgpool without kernel", NET "[p]\nop = avgpool\npad = 0\n" LOSS, 3, "avgpool layer [p] needs 'kernel = K'"},
    {"kernel larger than input", NET "[r]\nop = relu\n[c]\nop = conv2d\nfilters = 2\nkernel = 5\n" LOSS, 5,
     "layer [c]: kernel 5 is larger than its padded input 4x4"},
    {"pool kernel larger than input", NET FC "[p]\nop = maxpool\nkernel = 2\n" LOSS, 6,
     "layer [p]: kernel 2 is larger than its padded input 1x1"},
    {"pool pad over half the kernel", NET "[p]\nop = maxpool\nkernel = 2\npad = 2\n" LOSS, 3,
     "pad 2 is more than half the kernel 2"},
    {"softmax_xent not last", NET FC LOSS "[r]\nop = relu\n", 6, "layer [loss]: softmax_xent must be the last layer"},
    {"no softmax_xent at the end", NET FC "[r]\nop = relu\n", 6,
     "the last layer [r] is relu; a trainable net ends with 'op = softmax_xent'"},
    {"softmax_xent of one class", NET "[fc]\nop = linear\nout = 1\n" LOSS, 6, "softmax_xent needs at least 2 classes"},
    {"[net] without layers", NET, 2, "the net has no layers"},
    {"line without '='", NET "oops\n" FC LOSS, 3, "syntax error"},
    {"[unterminated header", NET "[fc\n" FC LOSS, 3, "syntax error"},
    {"line without '=' among good keys", NET "[fc]\nop = linear\nout 3\nout = 3\n" LOSS, 5, "syntax error"},
    {"key outside any section", "input = 1x4x4\n" NET FC LOSS, 1, "'input' outside any section"},
    {"empty section name", NET "[]\nop = relu\n" FC LOSS, 3, "section name '' must be 1..63 characters"},
    {"section name too long", NET "[a123456789b123456789c123456789d123456789e123456789f123456789abcd]\nop = relu\n" LOSS,
     3, "must be 1..63 characters"},
    {"net name too long", "[net]\nname = a123456789b123456789c123456789d123456789e123456789f123456789abcd\n"
                          "input = 1x4x4\n" FC LOSS, 2, "name is longer than 63 characters"},
    {"per-sample size over 2^31", "[net]\ninput = 65536x65536x1\n" FC LOSS, 3, "2^31 or more elements per sample"},
    {"first error wins", NET "[fc]\nop = linear\nout = -1\nout = -2\n[fc]\nop = relu\n" LOSS, 5, "out = '-1'"},
};

static void test_malformed_table(void)
{
    int failed = 0;
    const size_t n = sizeof bad_nets / sizeof bad_nets[0];
    for (size_t i = 0; i < n; i++) {
        const bad_net *b = &bad_nets[i];
        dlu_net *net = (dlu_net *)&net; /* poison: must be set to NULL */
        dlu_clear_error();
        dlu_status s = dlu_net_parse(b->text, "bad.net", &net);
        int ok = 1;
        if (s != DLU_EFORMAT || net != NULL) {
            printf("\n    FAIL %s: status %d (%s), wanted DLU_EFORMAT; out %s", b->what, (int)s, dlu_strerror(s),
                   net == NULL ? "NULL" : "set");
            ok = 0;
            if (s == DLU_OK)
                dlu_net_free(net);
        }
        ok = message_ok(b->what, "bad.net", b->line, b->phrase) && ok;
        failed += !ok;
        CU_ASSERT(ok);
    }
    printf("\n    %zu malformed nets, %d failed ", n, failed);
}

/* Regression cases: inputs an earlier parser got wrong (each comment says how). A case
 * with want_status DLU_OK must parse; otherwise it must fail at `line` with `phrase` in
 * the message and without the misleading not_phrase. */
typedef struct regression {
    const char *what;
    const char *text;
    dlu_status want_status;
    int line;
    const char *phrase;
    const char *not_phrase;
} regression;

static const regression regressions[] = {
    /* inih skips a UTF-8 BOM; the line reader must too, or it never sees [net]. */
    {"UTF-8 BOM before [net]", "\xEF\xBB\xBF" NET FC LOSS, DLU_OK, 0, NULL, NULL},
    /* inih reports syntax errors only at the end; the earlier error must win. */
    {"[unterminated header followed by keys", NET "[fc\nop = linear\nout = 3\n" LOSS, DLU_EFORMAT, 3,
     "syntax error", "section [net]"},
    {"line without '=' followed by a bad key", NET "[fc]\nop = linear\nout 3\nkernel = 2\n" LOSS, DLU_EFORMAT, 5,
     "syntax error", "unknown key"},
    /* inih's multi-line values read an indented line as a continuation; the reader strips
     * leading blanks so indentation means nothing. */
    {"indented second key", NET "[fc]\nop = linear\n  out = 3\n" LOSS, DLU_OK, 0, NULL, NULL},
    {"indented header", NET FC "  [loss]\nop = softmax_xent\n", DLU_OK, 0, NULL, NULL},
    /* CR-only line endings (old Mac) */
    {"CR line endings", "[net]\rinput = 1x4x4\r[fc]\rop = linear\rout = 3\r[loss]\rop = softmax_xent\r", DLU_OK, 0,
     NULL, NULL},
    /* 2^31 elements per sample used to pass a "more than 2^31" check and overflow int. */
    {"flatten of exactly 2^31 elements", "[net]\ninput = 65536x32768x1\n[f]\nop = flatten\n" FC LOSS, DLU_EFORMAT,
     3, "2^31", NULL},
    {"softmax_xent of exactly 2^31 classes", "[net]\ninput = 65536x32768x1\n" LOSS, DLU_EFORMAT, 3, "2^31", NULL},
};

static void test_regressions(void)
{
    const size_t n = sizeof regressions / sizeof regressions[0];
    for (size_t i = 0; i < n; i++) {
        const regression *b = &regressions[i];
        dlu_net *net = NULL;
        dlu_clear_error();
        dlu_status s = dlu_net_parse(b->text, "bug.net", &net);
        char pos[64];
        snprintf(pos, sizeof pos, "bug.net:%d: ", b->line);
        const char *msg = dlu_last_error();
        int ok = s == b->want_status;
        if (ok && s != DLU_OK)
            ok = strncmp(msg, pos, strlen(pos)) == 0 && (b->phrase == NULL || strstr(msg, b->phrase) != NULL);
        if (ok && s != DLU_OK && b->not_phrase != NULL)
            ok = strstr(msg, b->not_phrase) == NULL;
        if (!ok)
            printf("\n    FAIL %s: status %d, message \"%s\"", b->what, (int)s, s == DLU_OK ? "" : msg);
        CU_ASSERT(ok);
        dlu_net_free(net);
    }
}

/* A long line: the limit is inih's line buffer. */
static void test_long_line(void)
{
    char text[1024];
    char line[400];
    memset(line, 'x', sizeof line);
    line[0] = '#';
    line[sizeof line - 1] = '\0';
    snprintf(text, sizeof text, NET "%s\n" FC LOSS, line);
    dlu_net *net = NULL;
    CU_ASSERT_EQUAL(dlu_net_parse(text, "long.net", &net), DLU_EFORMAT);
    CU_ASSERT_PTR_NULL(net);
    CU_ASSERT(message_ok("comment line of 399 characters", "long.net", 3, "line longer than"));
    /* The same as a value on line 5. */
    snprintf(text, sizeof text, NET "[fc]\nop = linear\nout = %.300s\n" LOSS, line + 100);
    CU_ASSERT_EQUAL(dlu_net_parse(text, "long.net", &net), DLU_EFORMAT);
    CU_ASSERT(message_ok("value line of 306 characters", "long.net", 5, "line longer than"));
    /* A 150-character comment is fine. */
    snprintf(text, sizeof text, NET "%.150s\n" FC LOSS, line);
    CU_ASSERT_EQUAL(dlu_net_parse(text, "long.net", &net), DLU_OK);
    dlu_net_free(net);
}

/* More than MAX_LAYERS (1024) layers. */
static void test_too_many_layers(void)
{
    size_t cap = 64 * 1100;
    char *text = malloc(cap);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    size_t at = (size_t)snprintf(text, cap, "[net]\ninput = 1x4x4\n");
    for (int i = 0; i < 1030; i++)
        at += (size_t)snprintf(text + at, cap - at, "[r%d]\nop = relu\n", i);
    snprintf(text + at, cap - at, LOSS);
    dlu_net *net = NULL;
    CU_ASSERT_EQUAL(dlu_net_parse(text, "many.net", &net), DLU_EFORMAT);
    CU_ASSERT_PTR_NULL(net);
    /* Layer 1025 starts at line 3 + 2 * 1024. */
    CU_ASSERT(message_ok("1031 layers", "many.net", 3 + 2 * 1024, "more than 1024 layers"));
    free(text);
}

static void test_load_errors(void)
{
    char path[PATH_MAX];
    dlu_net *net = (dlu_net *)&net;

    /* Missing file: DLU_EIO naming the path. */
    tpath(path, "no-such.net");
    CU_ASSERT_EQUAL(dlu_net_load(path, &net), DLU_EIO);
    CU_ASSERT_PTR_NULL(net);
    CU_ASSERT(strstr(dlu_last_error(), path) != NULL && strstr(dlu_last_error(), "cannot open") != NULL);

    /* A NUL byte in an otherwise good file. */
    static const char with_nul[] = NET FC "\0" LOSS;
    tpath(path, "nul.net");
    CU_ASSERT_EQUAL_FATAL(spit(path, with_nul, sizeof with_nul - 1), 0);
    net = (dlu_net *)&net;
    CU_ASSERT_EQUAL(dlu_net_load(path, &net), DLU_EFORMAT);
    CU_ASSERT_PTR_NULL(net);
    CU_ASSERT(strstr(dlu_last_error(), path) != NULL && strstr(dlu_last_error(), "NUL byte") != NULL);

    /* A good file loads, and errors found by the parser name the path with the line. */
    static const char good[] = NET FC LOSS;
    tpath(path, "good.net");
    CU_ASSERT_EQUAL_FATAL(spit(path, good, sizeof good - 1), 0);
    CU_ASSERT_EQUAL(dlu_net_load(path, &net), DLU_OK);
    CU_ASSERT_STRING_EQUAL(dlu_net_name(net), "good");
    dlu_net_free(net);
    static const char bad[] = NET "[fc]\nop = linear\nout = x\n" LOSS;
    tpath(path, "bad.net");
    CU_ASSERT_EQUAL_FATAL(spit(path, bad, sizeof bad - 1), 0);
    CU_ASSERT_EQUAL(dlu_net_load(path, &net), DLU_EFORMAT);
    CU_ASSERT(message_ok("bad file", path, 5, "out = 'x'"));

    /* An empty file. */
    tpath(path, "empty.net");
    CU_ASSERT_EQUAL_FATAL(spit(path, "", 0), 0);
    CU_ASSERT_EQUAL(dlu_net_load(path, &net), DLU_EFORMAT);
    CU_ASSERT(message_ok("empty file", path, 1, "no [net] section"));

    /* Larger than 1 MiB: refused before parsing. */
    size_t big_n = ((size_t)1 << 20) + 16;
    char *big = malloc(big_n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    memset(big, '\n', big_n);
    memcpy(big, NET, sizeof NET - 1);
    tpath(path, "big.net");
    CU_ASSERT_EQUAL_FATAL(spit(path, big, big_n), 0);
    free(big);
    net = (dlu_net *)&net;
    CU_ASSERT_EQUAL(dlu_net_load(path, &net), DLU_EFORMAT);
    CU_ASSERT_PTR_NULL(net);
    CU_ASSERT(strstr(dlu_last_error(), "larger than") != NULL);

    /* A folder is not a net file. */
    net = (dlu_net *)&net;
    CU_ASSERT_NOT_EQUAL(dlu_net_load(tmpdir, &net), DLU_OK);
    CU_ASSERT_PTR_NULL(net);
    CU_ASSERT(strstr(dlu_last_error(), tmpdir) != NULL);
}

/* ---- bind, forward, backward, init ----------------------------------------------------- */

static dlu_net *load_bound_mlp(dlu_backend *be, int batch)
{
    char path[PATH_MAX];
    dlu_net *net = NULL;
    if (dlu_net_load(example(path, "mlp.net"), &net) != DLU_OK)
        return NULL;
    if (dlu_net_bind(net, be, batch) != DLU_OK) {
        dlu_net_free(net);
        return NULL;
    }
    return net;
}

static void test_bind_errors(void)
{
    dlu_backend *be = NULL;
    CU_ASSERT_EQUAL_FATAL(dlu_backend_open("cpu", &be), DLU_OK);
    char path[PATH_MAX], hex[65];
    dlu_net *net = NULL;
    CU_ASSERT_EQUAL_FATAL(dlu_net_load(example(path, "mlp.net"), &net), DLU_OK);
    /* Before bind: init, digest, forward and backward refuse. */
    int64_t xs[2] = {1, 784}, ys[1] = {1};
    dlu_tensor *x = NULL, *y = NULL;
    CU_ASSERT_EQUAL_FATAL(dlu_tensor_new(DLU_DTYPE_F32, 2, xs, &x), DLU_OK);
    CU_ASSERT_EQUAL_FATAL(dlu_tensor_new(DLU_DTYPE_I32, 1, ys, &y), DLU_OK);
    CU_ASSERT_EQUAL(dlu_net_forward(net, x, y, 1, NULL, NULL), DLU_EINVAL);
    CU_ASSERT(strstr(dlu_last_error(), "before bind") != NULL);
    dlu_tensor_free(x);
    dlu_tensor_free(y);
    CU_ASSERT_EQUAL(dlu_net_init_params(net, 1), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu_net_digest(net, hex), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu_net_backward(net), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu_net_bind(net, be, 0), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu_net_bind(net, be, -1), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu_net_bind(net, be, (1 << 20) + 1), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu_net_max_batch(net), 0);
    CU_ASSERT_EQUAL_FATAL(dlu_net_bind(net, be, 4), DLU_OK);
    CU_ASSERT_EQUAL(dlu_net_max_batch(net), 4);
    CU_ASSERT_PTR_EQUAL(dlu_net_backend(net), be);
    CU_ASSERT_EQUAL(dlu_net_bind(net, be, 4), DLU_EINVAL); /* twice */
    CU_ASSERT(strstr(dlu_last_error(), "already bound") != NULL);
    CU_ASSERT_EQUAL(dlu_net_backward(net), DLU_EINVAL); /* no forward yet */
    /* Bound: every parameter and gradient tensor has its shape, zero-filled. */
    for (int i = 0; i < dlu_net_nparams(net); i++) {
        int64_t shape[DLU_MAX_DIMS];
        int nd = dlu_net_param_shape(net, i, shape);
        dlu_tensor *p = dlu_net_param(net, i), *g = dlu_net_grad(net, i);
        CU_ASSERT_PTR_NOT_NULL_FATAL(p);
        CU_ASSERT_PTR_NOT_NULL_FATAL(g);
        CU_ASSERT_EQUAL(dlu_tensor_ndim(p), nd);
        for (int d = 0; d < nd; d++)
            CU_ASSERT_EQUAL(dlu_tensor_dim(p, d), shape[d]);
        CU_ASSERT_EQUAL(dlu_tensor_nelem(p), dlu_tensor_nelem(g));
    }
    CU_ASSERT_PTR_NULL(dlu_net_param(net, dlu_net_nparams(net)));
    dlu_net_free(net);
    dlu_backend_close(be);
}

static void test_forward_checks(void)
{
    dlu_backend *be = NULL;
    CU_ASSERT_EQUAL_FATAL(dlu_backend_open("cpu", &be), DLU_OK);
    dlu_net *net = load_bound_mlp(be, 4);
    CU_ASSERT_PTR_NOT_NULL_FATAL(net);
    CU_ASSERT_EQUAL_FATAL(dlu_net_init_params(net, 3), DLU_OK);
    int64_t xs[2] = {4, 784}, ys[1] = {4};
    dlu_tensor *x = NULL, *y = NULL;
    CU_ASSERT_EQUAL_FATAL(dlu_tensor_new_on(be, DLU_DTYPE_F32, 2, xs, &x), DLU_OK);
    CU_ASSERT_EQUAL_FATAL(dlu_tensor_new_on(be, DLU_DTYPE_I32, 1, ys, &y), DLU_OK);
    float *xh = malloc(4 * 784 * sizeof *xh);
    CU_ASSERT_PTR_NOT_NULL_FATAL(xh);
    for (int i = 0; i < 4 * 784; i++)
        xh[i] = (float)((i * 37) % 101) / 100.0f;
    CU_ASSERT_EQUAL(dlu_tensor_write(x, xh, 4 * 784 * sizeof *xh), DLU_OK);
    free(xh);

    /* A good batch. */
    int32_t lab[4] = {0, 9, 3, 5};
    CU_ASSERT_EQUAL(dlu_tensor_write(y, lab, sizeof lab), DLU_OK);
    double loss = -1;
    int64_t correct = -1;
    CU_ASSERT_EQUAL(dlu_net_forward(net, x, y, 4, &loss, &correct), DLU_OK);
    CU_ASSERT(isfinite(loss) && loss > 0.5 && loss < 5.0); /* near ln 10 at initialisation */
    CU_ASSERT(correct >= 0 && correct <= 4);
    CU_ASSERT_EQUAL(dlu_net_backward(net), DLU_OK);
    CU_ASSERT_EQUAL(dlu_net_forward(net, x, y, 3, NULL, NULL), DLU_OK); /* partial batch, NULL outputs */

    /* Labels out of range: 10 and -1, in any position. */
    int32_t bad_hi[4] = {0, 1, 2, 10}, bad_lo[4] = {-1, 0, 0, 0};
    CU_ASSERT_EQUAL(dlu_tensor_write(y, bad_hi, sizeof bad_hi), DLU_OK);
    CU_ASSERT_EQUAL(dlu_net_forward(net, x, y, 4, &loss, NULL), DLU_ERANGE);
    CU_ASSERT(strstr(dlu_last_error(), "label 10 of sample 3") != NULL);
    /* ...but a batch that stops before the bad label is fine. */
    CU_ASSERT_EQUAL(dlu_net_forward(net, x, y, 3, &loss, NULL), DLU_OK);
    CU_ASSERT_EQUAL(dlu_tensor_write(y, bad_lo, sizeof bad_lo), DLU_OK);
    CU_ASSERT_EQUAL(dlu_net_forward(net, x, y, 4, &loss, NULL), DLU_ERANGE);
    CU_ASSERT(strstr(dlu_last_error(), "label -1 of sample 0") != NULL);

    /* Batch sizes outside 1..bound. */
    CU_ASSERT_EQUAL(dlu_tensor_write(y, lab, sizeof lab), DLU_OK);
    CU_ASSERT_EQUAL(dlu_net_forward(net, x, y, 0, &loss, NULL), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu_net_forward(net, x, y, -1, &loss, NULL), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu_net_forward(net, x, y, 5, &loss, NULL), DLU_EINVAL);
    CU_ASSERT(strstr(dlu_last_error(), "bound for 1..4") != NULL);

    /* Wrong dtypes and too-small tensors. */
    CU_ASSERT_EQUAL(dlu_net_forward(net, y, y, 4, &loss, NULL), DLU_ESHAPE);
    CU_ASSERT_EQUAL(dlu_net_forward(net, x, x, 4, &loss, NULL), DLU_ESHAPE);
    int64_t small[2] = {2, 784};
    dlu_tensor *xsmall = NULL;
    CU_ASSERT_EQUAL_FATAL(dlu_tensor_new_on(be, DLU_DTYPE_F32, 2, small, &xsmall), DLU_OK);
    CU_ASSERT_EQUAL(dlu_net_forward(net, xsmall, y, 4, &loss, NULL), DLU_ESHAPE);
    CU_ASSERT_EQUAL(dlu_net_forward(net, xsmall, y, 2, &loss, NULL), DLU_OK);
    dlu_tensor_free(xsmall);

    dlu_tensor_free(x);
    dlu_tensor_free(y);
    dlu_net_free(net);
    dlu_backend_close(be);
}

static int digest_of(dlu_backend *be, uint64_t seed, char hex[65])
{
    dlu_net *net = load_bound_mlp(be, 4);
    if (net == NULL)
        return -1;
    int ok = dlu_net_init_params(net, seed) == DLU_OK && dlu_net_digest(net, hex) == DLU_OK;
    dlu_net_free(net);
    return ok ? 0 : -1;
}

static void test_init_digest(void)
{
    dlu_backend *be = NULL;
    CU_ASSERT_EQUAL_FATAL(dlu_backend_open("cpu", &be), DLU_OK);
    char a[65], b[65], c[65], d[65], z[65];
    CU_ASSERT_EQUAL_FATAL(digest_of(be, 7, a), 0);
    CU_ASSERT_EQUAL_FATAL(digest_of(be, 7, b), 0);
    CU_ASSERT_EQUAL_FATAL(digest_of(be, 8, c), 0);
    CU_ASSERT_EQUAL_FATAL(digest_of(be, (uint64_t)7 << 40, d), 0);
    CU_ASSERT_EQUAL(strlen(a), 64);
    CU_ASSERT(strspn(a, "0123456789abcdef") == 64);
    CU_ASSERT_STRING_EQUAL(a, b);
    CU_ASSERT_STRING_NOT_EQUAL(a, c);
    CU_ASSERT_STRING_NOT_EQUAL(a, d);

    /* A bound net before init holds zeros: the digest is SHA-256 of 269322 zero floats,
     * and differs from any initialised one. */
    dlu_net *net = load_bound_mlp(be, 4);
    CU_ASSERT_PTR_NOT_NULL_FATAL(net);
    CU_ASSERT_EQUAL(dlu_net_digest(net, z), DLU_OK);
    CU_ASSERT_STRING_NOT_EQUAL(z, a);

    /* Initialised weights lie in +-1/sqrt(fan_in) and are not all equal. */
    CU_ASSERT_EQUAL(dlu_net_init_params(net, 7), DLU_OK);
    dlu_tensor *w = dlu_net_param(net, 0);
    int64_t n = dlu_tensor_nelem(w);
    float *h = malloc((size_t)n * sizeof *h);
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    CU_ASSERT_EQUAL(dlu_tensor_read(w, h, (size_t)n * sizeof *h), DLU_OK);
    const float bound = 1.0f / sqrtf(784.0f);
    int in_range = 1;
    float lo = h[0], hi = h[0];
    for (int64_t i = 0; i < n; i++) {
        in_range &= fabsf(h[i]) <= bound;
        lo = h[i] < lo ? h[i] : lo;
        hi = h[i] > hi ? h[i] : hi;
    }
    CU_ASSERT(in_range);
    CU_ASSERT(lo < -0.9f * bound && hi > 0.9f * bound);
    free(h);
    char again[65];
    CU_ASSERT_EQUAL(dlu_net_digest(net, again), DLU_OK);
    CU_ASSERT_STRING_EQUAL(again, a);
    dlu_net_free(net);
    dlu_backend_close(be);
}

/* ---- main ------------------------------------------------------------------------------ */

static int suite_init(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/dlu-test-net-XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int suite_clean(void) { return nftw(tmpdir, remove_one, 16, FTW_DEPTH | FTW_PHYS); }

int main(void)
{
    static const struct {
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {"example nets: dlu_net_load, shapes, counts, MACs", test_examples_load},
        {"example nets: dlu_net_parse of the text", test_examples_parse},
        {"cnn parameter names and shapes", test_param_names_shapes},
        {"valid variants: comments, CRLF, defaults", test_valid_variants},
        {"malformed nets: status, origin:line, phrase", test_malformed_table},
        {"parser regressions", test_regressions},
        {"line longer than the limit", test_long_line},
        {"more than 1024 layers", test_too_many_layers},
        {"dlu_net_load: missing, NUL byte, empty, too big, folder", test_load_errors},
        {"bind errors and bound tensors", test_bind_errors},
        {"forward: label range, batch bounds, shapes", test_forward_checks},
        {"init: same seed same digest, other seed differs", test_init_digest},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("net (parser, shapes, bind, forward)", suite_init, suite_clean);
    int ok = s != NULL;
    for (size_t i = 0; ok && i < sizeof tests / sizeof tests[0]; i++)
        ok = CU_add_test(s, tests[i].name, tests[i].fn) != NULL;
    if (!ok) {
        fprintf(stderr, "test_net: cannot set up CUnit: %s\n", CU_get_error_msg());
        CU_cleanup_registry();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_ErrorCode err = CU_get_error();
    CU_cleanup_registry();
    return failed != 0 || err != CUE_SUCCESS ? 1 : 0;
}
