/* cmd.h -- the tile-level command stream of the simulated DLU.
 *
 * sim/lower.c turns each kernel of a training step into a stream of these commands;
 * hw_model/ executes the stream in simulated time (timing), and in verification mode
 * calls back into sim/exec.c at each command so that real data moves through the
 * model's local memories and register files (values). docs/sim-commands.md is the
 * prose version of this header.
 *
 * Ordering: commands for one DPU run in stream order on that DPU's two units, the DMA
 * engine (LOAD, STORE) and the DPE array (MAC, REQUANT, VEC), which work concurrently.
 * A command starts when its unit is free and every earlier command of the same DPU that
 * touches one of its buffers conflictingly (read after write, write after read, write
 * after write) has completed: that scoreboard is what makes double buffering overlap
 * DMA with compute. Master commands (STATS, BARRIER) wait until every DPU has completed
 * every earlier command.
 *
 * Not here: which tiles an op is cut into (lower.c) or what a command costs (hw_model/). */
#ifndef DLUSIM_CMD_H
#define DLUSIM_CMD_H

#include <stddef.h>
#include <stdint.h>

#include "dlu/sim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dlusim_cmd_kind {
    DLUSIM_CMD_LOAD,    /* DMA: HBM -> local memory buffer `wr`; nbytes from hbm_addr */
    DLUSIM_CMD_STORE,   /* DMA: local memory buffer rd[0] -> HBM; nbytes to hbm_addr */
    DLUSIM_CMD_MAC,     /* DPEs: acc `wr` (m x n) = or += A rd[0] (m x k) * B rd[1] (n x k)^T */
    DLUSIM_CMD_REQUANT, /* DPEs: m x n accumulators rd[0] -> output buffer `wr`, with statistics */
    DLUSIM_CMD_VEC,     /* DPEs: nelem elements, ops_per_elem operations each (rd/wr buffers optional) */
    DLUSIM_CMD_STATS,   /* master: aggregate every DPU's statistics counters, decide the point position */
    DLUSIM_CMD_BARRIER, /* master: wait until every DPU has completed every earlier command */
    DLUSIM_CMD_NKIND
} dlusim_cmd_kind;

/* Which logical operand of the op a LOAD/STORE/REQUANT moves (for the value executor). */
typedef enum dlusim_operand {
    DLUSIM_OPND_NONE,
    DLUSIM_OPND_A,    /* LOAD: rows [m0, m0+m) x cols [k0, k0+k) of the GEMM's A, packed row-major (m, k) */
    DLUSIM_OPND_B,    /* LOAD: rows [n0, n0+n) x cols [k0, k0+k) of B, packed (n, k) */
    DLUSIM_OPND_C,    /* REQUANT/STORE: the output tile rows [m0, m0+m) x cols [n0, n0+n), packed (m, n) */
    DLUSIM_OPND_BIAS, /* REQUANT/STORE: bias gradient entries [m0, m0+m) */
    DLUSIM_OPND_VEC   /* LOAD/STORE of an element-wise command's data (timing only) */
} dlusim_operand;

/* Flags. */
#define DLUSIM_F_ACC_INIT 0x01 /* MAC: overwrite the accumulators instead of adding (first k chunk) */
#define DLUSIM_F_CALIB 0x02    /* REQUANT/STATS: calibration pass; REQUANT only counts statistics */
#define DLUSIM_F_BIAS_SUM 0x04 /* MAC: also sum A's rows into the bias-gradient accumulators */
#define DLUSIM_F_STATS 0x08    /* REQUANT/VEC: the statistics circuit sees every produced element */

#define DLUSIM_NOBUF 0xff
#define DLUSIM_MAX_BUFS 16

/* A buffer: a region of every DPU's local memory or of every DPE array's register files
 * (the accumulators), the same layout on each DPU. */
typedef enum dlusim_space { DLUSIM_SPACE_LMEM, DLUSIM_SPACE_RF } dlusim_space;
typedef struct dlusim_buf {
    uint8_t space;   /* dlusim_space */
    uint32_t offset; /* bytes from the start of the DPU's local memory or register-file space */
    uint32_t nbytes;
} dlusim_buf;

typedef struct dlusim_cmd {
    uint8_t kind;      /* dlusim_cmd_kind */
    uint8_t phase;     /* dlu_sim_phase */
    uint8_t fmt_bits;  /* MAC: the wider operand's bits (32 fp32, 16, 8): sets MACs/lane/cycle */
    uint8_t flags;     /* DLUSIM_F_* */
    uint8_t operand;   /* dlusim_operand */
    uint8_t rd[2];     /* buffers read (DLUSIM_NOBUF: none) */
    uint8_t wr;        /* buffer written (DLUSIM_NOBUF: none) */
    uint16_t dpu;      /* DPU that runs it (LOAD/STORE/MAC/REQUANT/VEC) */
    uint16_t layer;    /* caller's layer index (reports) */
    uint32_t ops_per_elem; /* VEC */
    uint32_t m, n, k;  /* MAC tile; REQUANT: m x n elements; LOAD/STORE: the operand region */
    uint32_t m0, n0, k0; /* tile origin in the op's logical GEMM (value executor) */
    uint64_t nelem;    /* VEC/REQUANT: elements processed */
    uint64_t nbytes;   /* LOAD/STORE: bytes over DMA (the HBM side rounds up to bursts) */
    uint64_t hbm_addr; /* LOAD/STORE: HBM byte address of the first byte (channel interleaving) */
} dlusim_cmd;

/* One command stream with its buffer layout. Grows with dlusim_stream_push. */
typedef struct dlusim_stream {
    dlusim_cmd *cmd;
    size_t n, cap;
    dlusim_buf buf[DLUSIM_MAX_BUFS];
    int nbuf;
} dlusim_stream;

void dlusim_stream_init(dlusim_stream *s);
void dlusim_stream_clear(dlusim_stream *s); /* n = 0, nbuf = 0; keeps the allocation */
void dlusim_stream_free(dlusim_stream *s);
/* Append a command; DLU_ENOMEM (with message) when growing fails. */
dlu_status dlusim_stream_push(dlusim_stream *s, const dlusim_cmd *c);
/* Add a buffer; returns its id, or -1 when DLUSIM_MAX_BUFS are in use. */
int dlusim_stream_buf(dlusim_stream *s, dlusim_space space, uint32_t offset, uint32_t nbytes);

const char *dlusim_cmd_kind_name(dlusim_cmd_kind k);

#ifdef __cplusplus
}
#endif
#endif
