/* cpu_dense.c -- fp32 linear and conv2d, forward and backward, on the CPU.
 *
 * Contract (fp32): products and sums in IEEE single precision, GEMMs through
 * cblas_sgemm (OpenBLAS decides the summation order inside a GEMM, so fp32 results
 * are reproducible on one machine and thread count, not bit-exact across libraries).
 * Bias sums and accumulation across the batch go in ascending sample order.
 *
 *   linear   y (n, out)  = x (n, in) * W^T (in, out) + b;  W is (out, in) as in PyTorch
 *   conv2d   y (n, F, Ho, Wo) = W (F, C*k*k) * im2col(x) (C*k*k, Ho*Wo) + b; W is (F, C, k, k),
 *            Ho = (H + 2*pad - k)/stride + 1. Samples go through GEMM in chunks (conv_chunk),
 *            so the chunk size is part of the summation order of dW and db.
 *
 * Not here: low-precision (DFP) paths; those are in their own files and tested against
 * these. */
#include <stddef.h>
#include <string.h>

#include "cpu.h"

dlu_status dlu__cpu_linear_fwd(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const int n = a->n, in = (int)l->in_size, out = l->out;
    float *y = F32(a->y);           /* (n, out) */
    const float *b = a->b ? CF32(a->b) : NULL; /* (out) */
    float beta = 0.0f;
    if (b) {
        for (int i = 0; i < n; i++)
            memcpy(y + (size_t)i * out, b, (size_t)out * sizeof *y);
        beta = 1.0f;
    }
    dlu__cpu_sgemm(be, CblasNoTrans, CblasTrans, n, out, in, 1.0f, CF32(a->x), in, CF32(a->w), in, beta, y,
                   out);
    return DLU_OK;
}

dlu_status dlu__cpu_linear_bwd(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const int n = a->n, in = (int)l->in_size, out = l->out;
    const float *dy = CF32(a->dy); /* (n, out) */
    if (a->dx)
        dlu__cpu_sgemm(be, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out, CF32(a->w), in, 0.0f,
                       F32(a->dx), in);
    dlu__cpu_sgemm(be, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, CF32(a->x), in, 0.0f, F32(a->dw),
                   in);
    if (a->db) {
        float *db = F32(a->db);
        for (int j = 0; j < out; j++)
            db[j] = 0.0f;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < out; j++)
                db[j] += dy[(size_t)i * out + j];
    }
    return DLU_OK;
}

/* Output columns [*lo, *hi) whose input column ox*stride - pad + kx lies inside [0, W). */
static void valid_range(int Wo, int W, int stride, int pad, int kx, int *lo, int *hi)
{
    int a = pad - kx, l = a > 0 ? (a + stride - 1) / stride : 0; /* first ox with ix >= 0 */
    int h = (W - 1 + pad - kx) / stride + 1;                    /* first ox with ix >= W */
    if (W - 1 + pad - kx < 0)
        h = 0;
    *lo = l < Wo ? l : Wo;
    *hi = h < Wo ? (h > *lo ? h : *lo) : Wo;
}

/* im2col for one sample into columns [0, Ho*Wo) of a matrix with row stride ld:
 * col (C*k*k, ld), row index (c, ky, kx). Padding reads 0. The valid span of each
 * output row is computed once, so the inner loop is a plain (strided) copy. */
static void im2col(const float *x, int C, int H, int W, int k, int stride, int pad, int Ho, int Wo, float *col,
                   size_t ld)
{
    for (int r = 0; r < C * k * k; r++) {
        int c = r / (k * k), ky = (r / k) % k, kx = r % k, lo, hi;
        valid_range(Wo, W, stride, pad, kx, &lo, &hi);
        float *dst = col + (size_t)r * ld;
        const float *src = x + (size_t)c * H * W;
        for (int oy = 0; oy < Ho; oy++, dst += Wo) {
            int iy = oy * stride - pad + ky;
            if (iy < 0 || iy >= H) {
                memset(dst, 0, (size_t)Wo * sizeof *dst);
                continue;
            }
            const ptrdiff_t base = (ptrdiff_t)iy * W - pad + kx; /* input index of ox = 0 */
            for (int ox = 0; ox < lo; ox++)
                dst[ox] = 0.0f;
            if (stride == 1)
                memcpy(dst + lo, src + base + lo, (size_t)(hi - lo) * sizeof *dst);
            else
                for (int ox = lo; ox < hi; ox++)
                    dst[ox] = src[base + (ptrdiff_t)ox * stride];
            for (int ox = hi; ox < Wo; ox++)
                dst[ox] = 0.0f;
        }
    }
}

/* col2im for one sample: dx (C, H, W) = sum of the col entries (row stride ld) that
 * im2col read from each pixel, added in a fixed order: rows (c, ky, kx) ascending, then
 * output position. */
static void col2im(const float *col, size_t ld, int C, int H, int W, int k, int stride, int pad, int Ho, int Wo,
                   float *dx)
{
    memset(dx, 0, (size_t)C * H * W * sizeof *dx);
    for (int r = 0; r < C * k * k; r++) {
        int c = r / (k * k), ky = (r / k) % k, kx = r % k, lo, hi;
        valid_range(Wo, W, stride, pad, kx, &lo, &hi);
        const float *src = col + (size_t)r * ld;
        float *plane = dx + (size_t)c * H * W;
        for (int oy = 0; oy < Ho; oy++, src += Wo) {
            int iy = oy * stride - pad + ky;
            if (iy < 0 || iy >= H)
                continue;
            const ptrdiff_t base = (ptrdiff_t)iy * W - pad + kx;
            for (int ox = lo; ox < hi; ox++)
                plane[base + (ptrdiff_t)ox * stride] += src[ox];
        }
    }
}

/* Samples per GEMM: as many as keep one column matrix under about 8 MiB, so that a
 * chunk's GEMM is large enough for BLAS to run at speed without a batch-sized buffer. */
static int conv_chunk(const dlu__layer *l, int n)
{
    size_t per = (size_t)l->in_c * l->kernel * l->kernel * l->out_h * l->out_w * sizeof(float);
    size_t g = ((size_t)4 << 20) / (per ? per : 1);
    if (g < 1)
        g = 1;
    return g < (size_t)n ? (int)g : n;
}

size_t dlu__cpu_conv2d_ws(const dlu__layer *l, int n)
{
    /* col and dcol (C*k*k, G*HW), and the output/gradient staging (F, G*HW) */
    size_t cols = (size_t)conv_chunk(l, n) * l->out_h * l->out_w;
    return (2 * (size_t)l->in_c * l->kernel * l->kernel + (size_t)l->out_c) * cols * sizeof(float);
}

/* conv2d over a chunk of G samples is one GEMM: out (F, G*HW) = W (F, CKK) * col (CKK, G*HW),
 * where columns [s*HW, (s+1)*HW) belong to sample s of the chunk. */
dlu_status dlu__cpu_conv2d_fwd(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const int C = l->in_c, H = l->in_h, W = l->in_w, k = l->kernel, F = l->out_c;
    const int Ho = l->out_h, Wo = l->out_w, HW = Ho * Wo, CKK = C * k * k;
    const int G = conv_chunk(l, a->n);
    float *col = a->ws, *tmp = col + 2 * (size_t)CKK * G * HW;
    const float *w = CF32(a->w); /* (F, C*k*k) */
    const float *b = a->b ? CF32(a->b) : NULL;
    for (int i0 = 0; i0 < a->n; i0 += G) {
        const int g = a->n - i0 < G ? a->n - i0 : G;
        const size_t ld = (size_t)g * HW;
        for (int s = 0; s < g; s++)
            im2col(CF32(a->x) + (size_t)(i0 + s) * l->in_size, C, H, W, k, l->stride, l->pad, Ho, Wo,
                   col + (size_t)s * HW, ld);
        dlu__cpu_sgemm(be, CblasNoTrans, CblasNoTrans, F, (int)ld, CKK, 1.0f, w, CKK, col, (int)ld, 0.0f, tmp,
                       (int)ld);
        for (int s = 0; s < g; s++) {
            float *y = F32(a->y) + (size_t)(i0 + s) * l->out_size; /* (F, HW) */
            for (int f = 0; f < F; f++) {
                const float *t = tmp + (size_t)f * ld + (size_t)s * HW;
                const float bf = b ? b[f] : 0.0f;
                for (int p = 0; p < HW; p++)
                    y[(size_t)f * HW + p] = t[p] + bf;
            }
        }
    }
    return DLU_OK;
}

dlu_status dlu__cpu_conv2d_bwd(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const int C = l->in_c, H = l->in_h, W = l->in_w, k = l->kernel, F = l->out_c;
    const int Ho = l->out_h, Wo = l->out_w, HW = Ho * Wo, CKK = C * k * k;
    const int G = conv_chunk(l, a->n);
    float *col = a->ws, *dcol = col + (size_t)CKK * G * HW, *dyt = dcol + (size_t)CKK * G * HW;
    const float *w = CF32(a->w);
    float *dw = F32(a->dw); /* (F, C*k*k) */
    float *db = a->db ? F32(a->db) : NULL;
    if (db)
        memset(db, 0, (size_t)F * sizeof *db);
    for (int i0 = 0; i0 < a->n; i0 += G) {
        const int g = a->n - i0 < G ? a->n - i0 : G;
        const size_t ld = (size_t)g * HW;
        /* dyt (F, g*HW): the chunk's output gradients side by side */
        for (int s = 0; s < g; s++) {
            const float *dy = CF32(a->dy) + (size_t)(i0 + s) * l->out_size;
            for (int f = 0; f < F; f++)
                memcpy(dyt + (size_t)f * ld + (size_t)s * HW, dy + (size_t)f * HW, (size_t)HW * sizeof *dyt);
            im2col(CF32(a->x) + (size_t)(i0 + s) * l->in_size, C, H, W, k, l->stride, l->pad, Ho, Wo,
                   col + (size_t)s * HW, ld);
        }
        if (db)
            for (int f = 0; f < F; f++) {
                float sum = 0.0f;
                for (size_t p = 0; p < ld; p++)
                    sum += dyt[(size_t)f * ld + p];
                db[f] += sum;
            }
        dlu__cpu_sgemm(be, CblasNoTrans, CblasTrans, F, CKK, (int)ld, 1.0f, dyt, (int)ld, col, (int)ld,
                       i0 ? 1.0f : 0.0f, dw, CKK);
        if (a->dx) {
            dlu__cpu_sgemm(be, CblasTrans, CblasNoTrans, CKK, (int)ld, F, 1.0f, w, CKK, dyt, (int)ld, 0.0f, dcol,
                           (int)ld);
            for (int s = 0; s < g; s++)
                col2im(dcol + (size_t)s * HW, ld, C, H, W, k, l->stride, l->pad, Ho, Wo,
                       F32(a->dx) + (size_t)(i0 + s) * l->in_size);
        }
    }
    return DLU_OK;
}
