/* chip.h -- the whole DLU-like core as one SystemC module: HBM, on-chip network, one DMA
 * engine and one DPU per DPU slot, the master core, wired together; and the run context
 * they share. top/chip.cc also implements the C interface (hw_model/dluhw.h) on it.
 *
 * Not here: any timing of its own (each block owns its formulas). */
#ifndef DLUHW_CHIP_H
#define DLUHW_CHIP_H

#include <memory>

#include "hw_model/common.h"
#include "hw_model/dma/dma.h"
#include "hw_model/dpu/dpu.h"
#include "hw_model/hbm/hbm.h"
#include "hw_model/master/master.h"
#include "hw_model/noc/noc.h"

namespace dluhw {

class chip : public sc_core::sc_module {
public:
    chip(sc_core::sc_module_name name, const dlusim_hwcfg &cfg);

    const dlusim_hwcfg m_cfg; /* a copy: the blocks keep references to it */
    run_ctx m_run;
    hbm m_hbm;
    noc m_noc;
    std::vector<std::unique_ptr<dma>> m_dma;
    std::vector<std::unique_ptr<dpu>> m_dpu;
    std::unique_ptr<master> m_master;
};

} // namespace dluhw

#endif
