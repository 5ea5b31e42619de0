"""Your own model in xcnn: a ``Module`` subclass that writes only ``forward``.

    python examples/custom_model.py              # three models, 300 steps each
    python examples/custom_model.py --steps 20   # a quick check

Backward comes from the graph that ``forward`` records, so any Python works there:
nested ``Sequential``s, two branches joined with ``xcnn.cat``, a loss of your own
written with ``xcnn.nn.functional``. Trains on Fashion-MNIST (the bundled sample of
6,000 images when the full set cannot be had offline):

(a) PyTorch's tutorial CNN, class for class;
(b) two convolution branches (3x3 and 5x5) side by side, concatenated along the channels;
(c) the tutorial CNN with a hand-written loss: label smoothing from ``F.log_softmax``
    plus an L2 penalty on the weights.

Each prints its final training loss and its test accuracy.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import xcnn
import xcnn.nn.functional as F
from xcnn import data, nn, optim


class CNN(nn.Module):
    """conv-relu-pool twice, then two linear layers: (N, 1, 28, 28) -> (N, 10)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Linear(16 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(xcnn.flatten(self.features(x), 1))


class TwoBranch(nn.Module):
    """A 3x3 and a 5x5 branch over the same input, joined channel-wise (Inception's idea)."""

    def __init__(self):
        super().__init__()
        self.branch3 = nn.Conv2d(1, 8, 3, padding=1)
        self.branch5 = nn.Conv2d(1, 8, 5, padding=2)
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x):
        x = xcnn.cat([F.relu(self.branch3(x)), F.relu(self.branch5(x))], dim=1)  # (N, 16, 28, 28)
        x = F.max_pool2d(x, 2)
        x = F.max_pool2d(F.relu(self.conv(x)), 2)  # (N, 16, 7, 7)
        return self.fc(xcnn.flatten(x, 1))


def smoothed_cross_entropy(logits, targets, smoothing=0.1):
    """Cross-entropy against ``(1 - smoothing) * one_hot + smoothing / classes``.

    ``-sum_c target_c * log p_c`` splits into the usual cross-entropy and the mean of
    ``-log p_c`` over the classes, which is the uniform part's.
    """
    uniform = -F.log_softmax(logits, dim=1).mean(dim=1).mean()
    return (1 - smoothing) * F.cross_entropy(logits, targets) + smoothing * uniform


def l2_penalty(model):
    """Sum of the squared weights (biases excluded), a Tensor in the graph."""
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    total = (weights[0] * weights[0]).sum()
    for w in weights[1:]:
        total = total + (w * w).sum()
    return total


def train(model, loss_fn, loader, steps, lr):
    """``steps`` Adam steps on the graph; returns the mean loss of the last 20."""
    opt = optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    while len(losses) < steps:
        for x, y in loader:
            opt.zero_grad()
            loss = loss_fn(model(xcnn.Tensor(x)), xcnn.Tensor(y))
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
    last = losses[-20:]
    return sum(last) / len(last)


def load_data(root):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", data.SampleFallbackWarning)
        train_set = data.load_dataset("fashion-mnist", root=root, train=True)
        if isinstance(train_set, data.FashionMNISTSample):  # fell back: test on the sample too
            test_set = data.FashionMNISTSample(train=False)
        else:
            test_set = data.load_dataset("fashion-mnist", root=root, train=False)
    for notice in caught:
        print(f"notice: {notice.message}", file=sys.stderr)
    return train_set, test_set


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train three custom xcnn models.")
    parser.add_argument("--steps", type=int, default=300, help="training steps per model")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None, help="Fashion-MNIST files")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be positive")

    train_set, test_set = load_data(args.data_dir)
    print(f"{train_set.name}: {len(train_set)} train, {len(test_set)} test images")
    test_loader = data.DataLoader(test_set, 1000)

    runs = [
        ("(a) tutorial CNN", CNN, F.cross_entropy),
        ("(b) two branches + cat", TwoBranch, F.cross_entropy),
        ("(c) custom loss", CNN, None),
    ]
    for title, build, loss_fn in runs:
        xcnn.manual_seed(args.seed)  # each model starts from the same draws
        model = build()
        if loss_fn is None:

            def loss_fn(logits, y, model=model):
                return smoothed_cross_entropy(logits, y) + 1e-4 * l2_penalty(model)

        loader = data.DataLoader(train_set, args.batch_size, shuffle=True, seed=args.seed)
        start = time.perf_counter()
        loss = train(model, loss_fn, loader, args.steps, lr=2e-3)
        accuracy = xcnn.evaluate(model, test_loader)["accuracy"]
        seconds = time.perf_counter() - start
        print(
            f"{title:<24} final loss {loss:.4f} | {seconds:5.1f} s | test accuracy: {accuracy:.4f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
