#!/usr/bin/env python3
"""Peer trainer for the OpenDLU benchmarks: PyTorch eager on the CPU (or a GPU).

Trains one of the reference nets (mlp, cnn, lenet5) on Fashion-MNIST, read
straight from the IDX .gz files with gzip+numpy (no torchvision), and prints
one line per epoch and, as the last line of stdout, one JSON object:

  {"peer": "pytorch"|"qpytorch", "torch": ..., "net": ..., "quant": ...,
   "epochs": ..., "steps": ..., "train_samples_per_second": ...,
   "test_accuracy": ..., "train_loss": ..., "threads": ..., "seed": ..., ...}

train_samples_per_second counts the training loop only (forward, backward,
optimizer step, batch gathering from the in-memory tensors); data loading
from disk and the test-set evaluations are excluded.  train_loss is the
mean cross-entropy over the samples of the last epoch run.

--device cuda trains on the GPU (data set moved to the GPU once, batches
indexed there, as dlu's cuda backend does); the timed loop then ends with a
torch.cuda.synchronize() per epoch, so queued work is counted.

Run it with the venv made by bench/peers/setup_venv.sh:

  .venv-bench/bin/python bench/peers/torch_train.py --net mlp --epochs 1

--quant bfp8 / bfp16 (QPyTorch block floating point, word length 8 or 16
bits including the sign, ONE shared exponent per tensor, i.e.
BlockFloatingPoint(wl, dim=-1)) quantizes:
  * activations: the input images and the output of every Conv2d / Linear
    layer (qtorch.quant.Quantizer, forward rounding "nearest").  ReLU and
    max-pooling of values on the grid stay on the grid, so every tensor fed
    to a layer is quantized; the logits given to the loss are quantized.
  * errors: the same Quantizer modules quantize, in the backward pass, the
    gradient w.r.t. every Conv2d / Linear output (rounding "stochastic"),
    which is the error that both the weight gradient and the error sent to
    the layer below are computed from.
  * gradients: every weight and bias gradient, before the SGD step
    (qtorch.optim.OptimLP grad_quant, rounding "stochastic").
  * weights: every weight and bias after each step (OptimLP weight_quant,
    rounding "nearest"), so the forward and backward passes only see
    quantized weights.  With --master fp32 (default) an fp32 master copy
    receives the updates (OptimLP acc_quant = identity) and the quantized
    weights are recomputed from it after every step; with --master quant
    there is no master copy and the weights are stored quantized
    (stochastic rounding, so that small updates are not all lost).
  Not quantized: the loss / softmax computation, the momentum buffer, the
  arithmetic inside a layer (products and sums are fp32, as in QPyTorch).
  QPyTorch's stochastic rounding draws from its own C++ RNG seeded from
  std::random_device, so --quant runs are not bit-reproducible.
"""
import argparse
import gzip
import json
import os
import sys
import time

import numpy as np

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--net", choices=["mlp", "cnn", "lenet5"], default="mlp")
    p.add_argument("--quant", choices=["none", "bfp8", "bfp16"], default="none")
    p.add_argument("--master", choices=["fp32", "quant"], default="fp32",
                   help="with --quant: fp32 master weights (default) or weights kept only quantized")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=0,
                   help="stop after this many optimizer steps in all (0: no limit)")
    p.add_argument("--eval-batch", type=int, default=1000)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    p.add_argument("--data", default=DEFAULT_DATA,
                   help="directory with the Fashion-MNIST IDX .gz files (default %(default)s)")
    a = p.parse_args(argv)
    if a.epochs < 1 or a.batch < 1 or a.threads < 1 or a.max_steps < 0 or a.eval_batch < 1:
        p.error("--epochs, --batch, --threads, --eval-batch must be >= 1 and --max-steps >= 0")
    return a


# --------------------------------------------------------------------- data
def _read_idx(path, ndim):
    with gzip.open(path, "rb") as f:
        buf = f.read()
    magic = int.from_bytes(buf[0:4], "big")
    if magic != 0x0800 + ndim:
        raise ValueError(f"{path}: bad IDX magic {magic:#x} (want {0x800 + ndim:#x})")
    dims = [int.from_bytes(buf[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    off = 4 + 4 * ndim
    arr = np.frombuffer(buf, dtype=np.uint8, count=int(np.prod(dims)), offset=off)
    return arr.reshape(dims)


def load_fashion_mnist(d):
    def one(prefix):
        x = _read_idx(os.path.join(d, f"{prefix}-images-idx3-ubyte.gz"), 3)
        y = _read_idx(os.path.join(d, f"{prefix}-labels-idx1-ubyte.gz"), 1)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{prefix}: {x.shape[0]} images but {y.shape[0]} labels")
        x = (x.astype(np.float32) / np.float32(255.0)).reshape(-1, 1, 28, 28)  # NCHW, [0,1]
        return x, y.astype(np.int64)
    return one("train") + one("t10k")


# --------------------------------------------------------------------- nets
def build_net(name, quant_layer=None):
    import torch.nn as nn
    Q = (lambda: [quant_layer()]) if quant_layer else (lambda: [])
    if name == "mlp":
        layers = [nn.Flatten(), *Q(),
                  nn.Linear(784, 256), *Q(), nn.ReLU(),
                  nn.Linear(256, 256), *Q(), nn.ReLU(),
                  nn.Linear(256, 10), *Q()]
    elif name == "cnn":
        layers = [*Q(),
                  nn.Conv2d(1, 32, 5, padding=2), *Q(), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Conv2d(32, 64, 5, padding=2), *Q(), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Flatten(),
                  nn.Linear(3136, 256), *Q(), nn.ReLU(),
                  nn.Linear(256, 10), *Q()]
    elif name == "lenet5":
        layers = [*Q(),
                  nn.Conv2d(1, 6, 5, padding=2), *Q(), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Conv2d(6, 16, 5), *Q(), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Flatten(),
                  nn.Linear(400, 120), *Q(), nn.ReLU(),
                  nn.Linear(120, 84), *Q(), nn.ReLU(),
                  nn.Linear(84, 10), *Q()]
    else:
        raise ValueError(name)
    return nn.Sequential(*layers)


def _setup_qtorch_env():
    # qtorch builds its C++ kernels with torch.utils.cpp_extension at import:
    # use the venv's ninja and the build cache that setup_venv.sh filled.
    bindir = os.path.dirname(sys.executable)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))


def main(argv=None):
    args = parse_args(argv)
    t_load = time.perf_counter()
    xtr, ytr, xte, yte = load_fashion_mnist(args.data)
    t_load = time.perf_counter() - t_load

    if args.quant != "none":
        _setup_qtorch_env()
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    quant_layer, wl = None, None
    if args.quant != "none":
        from qtorch import BlockFloatingPoint
        from qtorch.quant import Quantizer, quantizer
        from qtorch.optim import OptimLP
        wl = {"bfp8": 8, "bfp16": 16}[args.quant]
        bfp = BlockFloatingPoint(wl=wl, dim=-1)  # one shared exponent per tensor
        quant_layer = lambda: Quantizer(forward_number=bfp, backward_number=bfp,
                                        forward_rounding="nearest",
                                        backward_rounding="stochastic")

    dev = torch.device(args.device)
    model = build_net(args.net, quant_layer).to(dev)  # PyTorch default init, seeded above
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                          weight_decay=0.0)
    if args.quant != "none":
        wq_round = "nearest" if args.master == "fp32" else "stochastic"
        opt = OptimLP(opt,
                      weight_quant=quantizer(forward_number=bfp, forward_rounding=wq_round),
                      grad_quant=quantizer(forward_number=bfp, forward_rounding="stochastic"),
                      momentum_quant=None,
                      acc_quant=(lambda t: t) if args.master == "fp32" else None)
        # start from quantized weights, like after any step
        with torch.no_grad():
            for p in model.parameters():
                p.data = opt.weight_quant(p.data).data

    xtr_t, ytr_t = torch.from_numpy(xtr).to(dev), torch.from_numpy(ytr).to(dev)
    xte_t, yte_t = torch.from_numpy(xte).to(dev), torch.from_numpy(yte).to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    n = xtr_t.shape[0]
    gen = torch.Generator().manual_seed(args.seed)

    def evaluate():
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, xte_t.shape[0], args.eval_batch):
                out = model(xte_t[i:i + args.eval_batch])
                correct += int((out.argmax(1) == yte_t[i:i + args.eval_batch]).sum())
        model.train()
        return correct / xte_t.shape[0]

    steps = samples = 0
    train_time = 0.0
    epochs_run = 0
    last_loss = float("nan")
    test_acc = None
    for ep in range(1, args.epochs + 1):
        perm = torch.randperm(n, generator=gen).to(dev)  # reshuffled every epoch
        ep_loss = torch.zeros((), dtype=torch.float64, device=dev)
        ep_samples = 0
        t0 = time.perf_counter()
        for i in range(0, n, args.batch):  # last partial batch kept
            if args.max_steps and steps >= args.max_steps:
                break
            idx = perm[i:i + args.batch]
            xb, yb = xtr_t[idx], ytr_t[idx]
            loss = F.cross_entropy(model(xb), yb)  # mean over the batch
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ep_loss += loss.detach().double() * idx.numel()
            ep_samples += idx.numel()
            steps += 1
        sync()
        dt = time.perf_counter() - t0
        if ep_samples == 0:
            break
        epochs_run = ep
        train_time += dt
        samples += ep_samples
        last_loss = float(ep_loss) / ep_samples
        test_acc = evaluate()
        print(f"epoch {ep}/{args.epochs} steps {steps} samples {ep_samples} "
              f"loss {last_loss:.4f} test_acc {test_acc:.4f} time {dt:.2f}s "
              f"{ep_samples / dt:.1f} samples/s", flush=True)
        if args.max_steps and steps >= args.max_steps:
            break

    result = {
        "peer": "pytorch" if args.quant == "none" else "qpytorch",
        "torch": torch.__version__,
        "net": args.net,
        "quant": args.quant,
        "epochs": epochs_run,
        "steps": steps,
        "train_samples_per_second": samples / train_time if train_time > 0 else None,
        "test_accuracy": test_acc,
        "train_loss": last_loss,
        "threads": args.threads,
        "device": args.device,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "seed": args.seed,
        "samples": samples,
        "train_seconds": train_time,
        "data_load_seconds": t_load,
        "batch": args.batch,
        "lr": args.lr,
        "momentum": args.momentum,
        "max_steps": args.max_steps,
    }
    if args.quant != "none":
        import importlib.metadata as md
        result["qtorch"] = md.version("qtorch")
        result["master_weights"] = args.master
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
