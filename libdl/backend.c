/* backend.c -- the op table, the backend registry and device-string parsing. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend_impl.h"
#include "error.h"

static const struct {
    const char *name;
    int nparams;
} op_info[] = {
#define DLU_OP(name, str, nparams) {str, nparams},
#include "dlu/ops.def"
#undef DLU_OP
};
_Static_assert(sizeof op_info / sizeof op_info[0] == DLU_OP_COUNT, "ops.def and op_info disagree");

const char *dlu_op_name(dlu_op op) { return (unsigned)op < DLU_OP_COUNT ? op_info[op].name : "?"; }
int dlu_op_nparams(dlu_op op) { return (unsigned)op < DLU_OP_COUNT ? op_info[op].nparams : 0; }

dlu_op dlu_op_from_name(const char *name)
{
    for (int i = 0; i < DLU_OP_COUNT; i++)
        if (strcmp(op_info[i].name, name) == 0)
            return (dlu_op)i;
    return DLU_OP_COUNT;
}

/* Every backend kind; order is the order `dlu info` lists them. */
static const dlu__backend_vtbl *const registry[] = {&dlu__cpu_vtbl, &dlu__cuda_vtbl, &dlu__dlusim_vtbl};
#define NREG (int)(sizeof registry / sizeof registry[0])

int dlu_backend_kinds(const char **names, const char **notes, int max)
{
    int n = 0;
    for (int i = 0; i < NREG && n < max; i++, n++) {
        names[n] = registry[i]->kind;
        notes[n] = registry[i]->note;
    }
    return n;
}

dlu_status dlu_backend_open(const char *device, dlu_backend **out)
{
    *out = NULL;
    if (!device || !*device)
        return dlu__error(DLU_EINVAL, "device: empty device string (expected cpu, cuda, cuda:N or dlusim:CONFIG.ini)");
    size_t klen = strcspn(device, ":");
    const char *arg = device[klen] == ':' ? device + klen + 1 : "";
    if (strlen(device) >= sizeof((dlu_backend *)0)->device)
        return dlu__error(DLU_EINVAL, "device: device string too long (%zu bytes)", strlen(device));
    for (int i = 0; i < NREG; i++) {
        const dlu__backend_vtbl *vt = registry[i];
        if (strlen(vt->kind) != klen || strncmp(vt->kind, device, klen) != 0)
            continue;
        dlu_backend *be = calloc(1, sizeof *be);
        if (!be)
            return dlu__error(DLU_ENOMEM, "device: out of memory");
        be->vt = vt;
        strcpy(be->device, device);
        dlu_status s = vt->open(be, arg);
        if (s != DLU_OK) {
            free(be);
            return dlu__error_prefix(s, "device '%s': ", device);
        }
        *out = be;
        return DLU_OK;
    }
    return dlu__error(DLU_EINVAL, "device '%s': unknown device kind '%.*s' (expected cpu, cuda, cuda:N or dlusim:CONFIG.ini)",
                      device, (int)klen, device);
}

void dlu_backend_close(dlu_backend *be)
{
    if (!be)
        return;
    be->vt->close(be);
    free(be);
}

const char *dlu_backend_kind(const dlu_backend *be) { return be->vt->kind; }
const char *dlu_backend_device(const dlu_backend *be) { return be->device; }
dlu_status dlu_backend_sync(dlu_backend *be) { return be->vt->sync(be); }
void dlu_backend_prof_get(const dlu_backend *be, dlu_backend_prof *p) { *p = be->prof; }
void dlu_backend_prof_reset(dlu_backend *be) { memset(&be->prof, 0, sizeof be->prof); }

uint64_t dlu__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
