/* cmd.c -- the command stream container (sim/cmd.h). */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "sim/cmd.h"

void dlusim_stream_init(dlusim_stream *s) { memset(s, 0, sizeof *s); }

void dlusim_stream_clear(dlusim_stream *s)
{
    s->n = 0;
    s->nbuf = 0;
}

void dlusim_stream_free(dlusim_stream *s)
{
    free(s->cmd);
    memset(s, 0, sizeof *s);
}

dlu_status dlusim_stream_push(dlusim_stream *s, const dlusim_cmd *c)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 1024;
        dlusim_cmd *p = realloc(s->cmd, cap * sizeof *p);
        if (!p)
            return dlu__error(DLU_ENOMEM, "dlusim: out of memory growing a command stream to %zu commands", cap);
        s->cmd = p;
        s->cap = cap;
    }
    s->cmd[s->n++] = *c;
    return DLU_OK;
}

int dlusim_stream_buf(dlusim_stream *s, dlusim_space space, uint32_t offset, uint32_t nbytes)
{
    if (s->nbuf >= DLUSIM_MAX_BUFS)
        return -1;
    s->buf[s->nbuf] = (dlusim_buf){.space = (uint8_t)space, .offset = offset, .nbytes = nbytes};
    return s->nbuf++;
}

const char *dlusim_cmd_kind_name(dlusim_cmd_kind k)
{
    static const char *const names[DLUSIM_CMD_NKIND] = {"load", "store", "mac", "requant", "vec", "stats", "barrier"};
    return (unsigned)k < DLUSIM_CMD_NKIND ? names[k] : "?";
}
