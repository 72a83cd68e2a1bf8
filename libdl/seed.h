/* seed.h -- deriving the 32-bit seeds of GSL's MT19937 generators from a 64-bit seed.
 *
 * GSL's MT19937 keeps only the low 32 bits of its seed and maps 0 to 4357, so passing the
 * user's seed straight through makes seeds 0 and 4357 (or 1 and 2^32) give the same run.
 * Each generator instead gets splitmix64(seed + stream * golden ratio), low 32 bits, never 0:
 * different streams are independent, and two seeds collide only by a 2^-32 accident. */
#ifndef DLU_SEED_H
#define DLU_SEED_H

#include <stdint.h>

/* stream 0: parameter initialisation; 1: training data order. */
static inline unsigned long dlu__seed32(uint64_t seed, uint64_t stream)
{
    uint64_t z = seed + (stream + 1) * 0x9E3779B97F4A7C15ull; /* splitmix64 (Steele et al. 2014) */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    uint32_t s = (uint32_t)z;
    return s ? s : 1u;
}

#endif
