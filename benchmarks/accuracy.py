"""Train one recipe in xcnn and in PyTorch and compare test accuracy and epoch time.

Both frameworks start from the same weights (copied through ``state_dict``),
see the same batches in the same order (PyTorch reads xcnn's NumPy DataLoader)
and use the same optimizer (Adam) and schedule (cosine over the run), as
``examples/train.py`` does. Only dropout masks differ.

    python benchmarks/accuracy.py --model lenet5 --epochs 10 \\
        --data-dir /usr/share/datasets/fashion-mnist

Appends a row per framework to docs/accuracy.md (``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import xcnn
from xcnn import data, models, nn, optim
from xcnn.testing import to_torch

ROOT = Path(__file__).resolve().parent.parent
BUILDERS = {"lenet5": models.lenet5, "simple_cnn": models.simple_cnn}


def loaders(args):
    train = data.FashionMNIST(root=args.data_dir, train=True, download=False)
    test = data.FashionMNIST(root=args.data_dir, train=False, download=False)
    return (
        data.DataLoader(train, args.batch_size, shuffle=True, seed=args.seed),
        data.DataLoader(test, 1000),
    )


def run_xcnn(args) -> dict:
    train, test = loaders(args)
    model = BUILDERS[args.model](rng=args.seed)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    hist = xcnn.fit(
        model,
        nn.CrossEntropyLoss(),
        opt,
        train,
        args.epochs,
        val_loader=test,
        scheduler=sched,
        progress=False,
        verbose=True,
    )
    return {"test_accuracy": hist.val_accuracy[-1], "epoch_seconds": hist.seconds}


def run_torch(args) -> dict:
    train, test = loaders(args)
    model = to_torch(BUILDERS[args.model](rng=args.seed))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    loss_fn = torch.nn.CrossEntropyLoss()
    seconds, accuracy = [], 0.0
    for epoch in range(args.epochs):
        model.train()
        start = time.perf_counter()
        for x, y in train:
            opt.zero_grad()
            loss_fn(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
            opt.step()
        sched.step()
        seconds.append(time.perf_counter() - start)
        model.eval()
        correct = total = 0
        with torch.inference_mode():
            for x, y in test:
                correct += int((model(torch.from_numpy(x)).argmax(1).numpy() == y).sum())
                total += len(y)
        accuracy = correct / total
        print(f"torch epoch {epoch + 1}: test accuracy {accuracy:.4f}, {seconds[-1]:.1f} s")
    return {"test_accuracy": accuracy, "epoch_seconds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(BUILDERS), default="lenet5")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--framework", choices=["xcnn", "torch", "both"], default="both")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "accuracy.md")
    args = parser.parse_args()
    xcnn.backends.use("numpy")
    torch.manual_seed(args.seed)

    runs = {}
    if args.framework in ("xcnn", "both"):
        runs["xcnn"] = run_xcnn(args)
    if args.framework in ("torch", "both"):
        runs["PyTorch " + torch.__version__] = run_torch(args)

    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    today = datetime.date.today().isoformat()
    lines = []
    for name, result in runs.items():
        median_epoch = float(np.median(result["epoch_seconds"]))
        lines.append(
            f"| {today} | {args.model} | {name} | {args.epochs} | {args.batch_size} | "
            f"Adam {args.lr:g}, cosine | {result['test_accuracy']:.4f} | {median_epoch:.1f} s | "
            f"{machine} |"
        )
        print(json.dumps({"framework": name, **result}))
    if not args.out.exists():
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            "# Accuracy on Fashion-MNIST\n\n"
            "Produced by `benchmarks/accuracy.py` (same initial weights, same batches, same\n"
            "optimizer and schedule in both frameworks).\n\n"
            "| date | model | framework | epochs | batch | optimizer | test accuracy "
            "| median epoch time (training only) | machine |\n"
            "| --- | --- | --- | ---: | ---: | --- | ---: | ---: | --- |\n"
        )
    with args.out.open("a") as f:
        f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
