/* cpu_quant.h -- fast fp32 -> DFP quantization, accumulator requantization, DFP statistics
 * and stochastic-rounding bits for the CPU backend (internal).
 *
 * What it is: drop-in replacements for the tensor helpers of dlu/numerics.h
 * (dlu_quantize_f32, dlu_requantize_acc64, dlu_requantize_acc32) that return exactly the
 * same output bytes and add exactly the same struct dlu_stats for every input, every
 * exponent, both formats and both rounding modes; plus the statistics of an existing DFP
 * tensor and a batch form of dlu_sr_bits64. They work in blocks with branch-light loops
 * that the compiler vectorises and a Philox-4x32-10 that computes 16 counters at once,
 * with the instruction set (AVX-512, AVX2, portable C) chosen at run time.
 *
 * What it is not: not the spec. numerics.h is; these functions are tested against it
 * (tests/test_cpu_quant.c) and must change whenever it does. Not multi-threaded, and not a
 * place for exponent policy.
 *
 * Thread safety: every function may be called from any thread; each writes only through
 * its output pointers (statistics are added into *st, which is not updated atomically:
 * give each thread its own and merge). No allocation; up to about 16 KiB of stack.
 * Outputs must not overlap inputs. */
#ifndef DLU_CPU_QUANT_H
#define DLU_CPU_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "dlu/numerics.h"
#include "dlu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Same contract, arguments and results as dlu_quantize_f32 (numerics.h): x (n) fp32 ->
 * q_out (n) int8_t for DLU_FMT_DFP8 or int16_t for DLU_FMT_DFP16 at shared exponent e;
 * element i rounds with dlu_sr_bits64(seed, id, step, index_base + i) in stochastic mode;
 * st (may be NULL) is added into. Returns DLU_OK, or DLU_EINVAL (nothing written, message
 * in dlu_last_error()) for a non-DFP fmt, an unknown mode, or NULL x/q_out with n > 0. */
dlu_status dlu__cpu_quantize_f32(const float *x /* (n) */, size_t n, int e, dlu_format fmt, dlu_round mode,
                                 uint64_t seed, uint32_t id, uint32_t step, size_t index_base,
                                 void *q_out /* (n) int8_t or int16_t */, dlu_stats *st);

/* Same contract as dlu_requantize_acc64: acc (n) at exponent ea -> q_out (n) at eo. */
dlu_status dlu__cpu_requantize_acc64(const int64_t *acc /* (n) */, size_t n, int ea, int eo, dlu_format fmt,
                                     dlu_round mode, uint64_t seed, uint32_t id, uint32_t step, size_t index_base,
                                     void *q_out /* (n) int8_t or int16_t */, dlu_stats *st);

/* Same contract as dlu_requantize_acc32 (int32 accumulators). */
dlu_status dlu__cpu_requantize_acc32(const int32_t *acc /* (n) */, size_t n, int ea, int eo, dlu_format fmt,
                                     dlu_round mode, uint64_t seed, uint32_t id, uint32_t step, size_t index_base,
                                     void *q_out /* (n) int8_t or int16_t */, dlu_stats *st);

/* Statistics of n DFP integers q (int8_t for DLU_FMT_DFP8, int16_t for DLU_FMT_DFP16) at
 * exponent e, added into st exactly as if each were requantized from int64 at ea = eo = e:
 * count, zeros, histogram bin dlu_leading_sign_pos(q) + e, and overflow for the one value
 * outside the symmetric range (-128 or -32768), which such a requantization saturates.
 * Does nothing if st or q is NULL or fmt is not a DFP format. */
void dlu__cpu_stats_q(const void *q /* (n) int8_t or int16_t */, size_t n, int e, dlu_format fmt, dlu_stats *st);

/* Histogram statistics of n accumulators at exponent ea: count, zeros and the histogram
 * exactly as dlu_requantize_acc64 records them (k = dlu_leading_sign_pos64(acc) + ea);
 * overflow, underflow and nan are left alone (what the g=fp32 gradient path records).
 * Does nothing if st or acc is NULL. */
void dlu__cpu_stats_acc64(const int64_t *acc /* (n) */, size_t n, int ea, dlu_stats *st);

/* n consecutive stochastic-rounding words: out[i] = dlu_sr_bits64(seed, id, step,
 * index0 + i) (the index wraps modulo 2^64 like the reference's). */
void dlu__cpu_sr_bits64(uint64_t seed, uint32_t id, uint32_t step, uint64_t index0, size_t n,
                        uint64_t *out /* (n) */);

/* The code path the functions above use now: "avx512", "avx2" or "portable" (a static
 * string). All give the same bits. */
const char *dlu__cpu_quant_impl(void);

/* Use the path `name` ("avx512", "avx2", "portable"), or the best one this CPU runs for
 * NULL (the default). For tests and benchmarks; process-wide, takes effect for calls that
 * start afterwards. Returns DLU_OK, DLU_EUNSUPPORTED if this CPU cannot run it, DLU_EINVAL
 * for an unknown name (setting unchanged on error). */
dlu_status dlu__cpu_quant_select(const char *name);

#ifdef __cplusplus
}
#endif
#endif
