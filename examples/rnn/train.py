"""Train the layer-normalized RNN on the adding problem and write examples/rnn/ln_rnn.npz.

    python -m examples.rnn.train            (or python examples/rnn/train.py)

Needs PyTorch (``pip install torch``); the shipped weights make it unnecessary for everything
else.  Seeded and deterministic: the same torch build on the same machine gives the same file.
Fresh batches from :func:`examples.rnn.lnrnn.adding_task` at every step (training seed 0, validation
seed 1, never the test seed), float64, Adam with a cosine learning-rate decay, gradient clipping.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from examples.rnn import lnrnn as rnn

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from model import TorchLNRNN
else:
    from .model import TorchLNRNN

TRAIN_SEED, VALIDATION_SEED = 0, 1


def tensors(data: rnn.Dataset):
    return (torch.from_numpy(data.inputs), torch.from_numpy(data.lengths),
            torch.from_numpy(data.labels).to(torch.float64))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.rnn.train", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8000, help="optimizer steps")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=TRAIN_SEED)
    parser.add_argument("--out", type=Path, default=rnn.WEIGHTS_PATH)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float64)
    data_rng = np.random.default_rng(args.seed)

    model = TorchLNRNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps, eta_min=args.lr / 30)
    val_x, val_len, val_y = tensors(rnn.adding_task(VALIDATION_SEED, 2000))

    def validate():
        with torch.no_grad():
            logits = model(val_x, val_len)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, val_y).item()
            return loss, ((logits > 0).to(torch.float64) == val_y).to(torch.float64).mean().item()

    start = time.monotonic()
    for step in range(1, args.steps + 1):
        x, lengths, y = tensors(rnn.adding_task(data_rng, args.batch))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x, lengths), y)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 250 == 0 or step == args.steps:
            val_loss, val_acc = validate()
            print(f"step {step:5d}  train loss {loss.item():.4f}  validation loss {val_loss:.4f} "
                  f"accuracy {val_acc:.4f}  ({time.monotonic() - start:.0f} s)", flush=True)

    val_loss, val_acc = validate()
    meta = {"task": f"adding problem (classification: u_a + u_b > 1), lengths {rnn.T_MIN}..{rnn.T_MAX}",
            "hidden": rnn.HIDDEN, "eps": rnn.EPS, "steps": args.steps, "batch": args.batch,
            "lr": args.lr, "seed": args.seed, "validation_seed": VALIDATION_SEED,
            "validation_accuracy_torch": val_acc, "validation_loss_torch": val_loss,
            "torch": torch.__version__, "train_seconds": round(time.monotonic() - start, 1)}
    weights = model.export(meta)

    # the NumPy float64 inference must reproduce the torch model
    check = rnn.run(weights, rnn.FloatLayerNorm(weights), rnn.adding_task(VALIDATION_SEED, 2000))
    with torch.no_grad():
        torch_logits = model(val_x, val_len).numpy()
    gap = float(np.max(np.abs(check.logits - torch_logits)))
    if gap > 1e-9:
        raise SystemExit(f"NumPy inference differs from torch by {gap:g} in the logits")
    for name in ("gamma", "beta"):
        values = getattr(weights, name)
        if np.max(np.abs(values)) >= 8:
            raise SystemExit(f"{name} reaches {np.max(np.abs(values)):.3f}: outside s4.12")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    weights.save(args.out)
    print(f"validation accuracy {val_acc:.4f} (torch) = {check.accuracy(val_y.numpy()):.4f} (NumPy float64); "
          f"|γ| ≤ {np.abs(weights.gamma).max():.3f}, |β| ≤ {np.abs(weights.beta).max():.3f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
