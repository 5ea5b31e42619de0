"""Numerical faults are loud: divergence stops ``fit``, extreme logits stay exact,
degenerate batch statistics are refused."""

from __future__ import annotations

import math

import numpy as np
import pytest

import xcnn
from xcnn import backends, nn, ops, optim
from xcnn.train import TrainingDiverged

# -- divergence -------------------------------------------------------------------------


def blobs(rng, n: int = 32, features: int = 4, classes: int = 3):
    y = rng.integers(0, classes, size=n)
    x = rng.standard_normal((n, features)) + 3.0 * np.eye(classes, features)[y]
    return x.astype(np.float32), y.astype(np.int64)


def batches(backend, x, y, size: int):
    return [
        (backend.asarray(x[i : i + size]), backend.asarray(y[i : i + size]))
        for i in range(0, x.shape[0], size)
    ]


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_a_huge_learning_rate_stops_fit_with_epoch_and_step(backend, rng):
    x, y = blobs(rng)
    model = nn.Sequential(nn.Linear(4, 16, rng=0), nn.ReLU(), nn.Linear(16, 3, rng=1))
    loader = batches(backend, x, y, 8)
    with pytest.raises(TrainingDiverged) as caught:
        xcnn.fit(
            model,
            nn.CrossEntropyLoss(),
            optim.SGD(model.parameters(), lr=1e30),
            loader,
            epochs=3,
            progress=False,
        )
    error = caught.value
    assert isinstance(error, FloatingPointError) and isinstance(error, RuntimeError)
    assert error.epoch == 1 and 2 <= error.step <= len(loader)
    message = str(error)
    assert f"epoch {error.epoch}" in message and f"step {error.step}" in message
    assert "NaN or infinite" in message and "1e+30" in message

    # The reported step really is the first non-finite loss: replaying the same
    # updates, every earlier loss is finite and that one is not.
    replay = nn.Sequential(nn.Linear(4, 16, rng=0), nn.ReLU(), nn.Linear(16, 3, rng=1))
    opt = optim.SGD(replay.parameters(), lr=1e30)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    with np.errstate(all="ignore"):
        for xb, yb in loader[: error.step]:
            opt.zero_grad()
            losses.append(float(backend.to_numpy(loss_fn(replay(xb), yb))))
            replay.backward(loss_fn.backward())
            opt.step()
    assert all(math.isfinite(v) for v in losses[:-1]) and not math.isfinite(losses[-1])


class PoisonedLoader:
    """Finite batches, except that epoch ``bad_epoch`` step ``bad_step`` holds an inf."""

    def __init__(self, backend, x, y, size, bad_epoch, bad_step):
        self.batches = batches(backend, x, y, size)
        self.backend, self.bad_epoch, self.bad_step = backend, bad_epoch, bad_step
        self.epoch = 0

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        self.epoch += 1
        for step, (xb, yb) in enumerate(self.batches, start=1):
            if (self.epoch, step) == (self.bad_epoch, self.bad_step):
                host = self.backend.to_numpy(xb).copy()
                host[0, 0] = np.inf
                xb = self.backend.asarray(host)
            yield xb, yb


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
@pytest.mark.parametrize("log_interval", [1, 50])
def test_divergence_names_the_exact_step_and_keeps_the_last_good_checkpoint(
    backend, rng, tmp_path, log_interval
):
    x, y = blobs(rng, n=40)
    loader = PoisonedLoader(backend, x, y, 8, bad_epoch=2, bad_step=3)
    model = nn.Sequential(nn.Linear(4, 3, rng=0))
    checkpoint = tmp_path / "ck.safetensors"
    with pytest.raises(TrainingDiverged) as caught:
        xcnn.fit(
            model,
            nn.CrossEntropyLoss(),
            optim.SGD(model.parameters(), lr=0.1),
            loader,
            epochs=4,
            checkpoint=checkpoint,
            progress=False,
            log_interval=log_interval,
        )
    error = caught.value
    assert (error.epoch, error.step, error.global_step) == (2, 3, len(loader) + 3)
    assert "epoch 2 at step 3" in str(error) and str(checkpoint) in str(error)
    assert loader.epoch == 2, "fit kept training after the loss became non-finite"
    # The checkpoint still holds epoch 1, complete and finite.
    fresh = nn.Sequential(nn.Linear(4, 3, rng=5))
    meta = xcnn.load(checkpoint, fresh)
    assert meta["epoch"] == 1
    assert all(np.isfinite(v).all() for v in fresh.state_dict().values())


# -- softmax cross-entropy at extreme logits --------------------------------------------


def reference_cross_entropy(logits: np.ndarray, targets: np.ndarray):
    """Float64 log-sum-exp: (mean loss, dloss/dlogits)."""
    z = logits.astype(np.float64)
    top = z.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    n = z.shape[0]
    loss = np.mean(lse - z[np.arange(n), targets])
    probs = np.exp(z - lse[:, None])
    onehot = np.eye(z.shape[1])[targets]
    return loss, (probs - onehot) / n


def extreme_logits(rng, dtype):
    logits = rng.choice([-1e4, 0.0, 1e4], size=(6, 5)) + rng.uniform(-1.0, 1.0, size=(6, 5))
    logits[0, :] = 1e4  # all tied at the top
    logits[1, :] = -1e4  # all tied at the bottom
    logits[2, :] = [1e4, -1e4, 1e4, -1e4, 0.0]
    targets = rng.integers(0, 5, size=6)
    targets[2] = 1  # the target is 2e4 below the top: a loss of about 2e4
    return logits.astype(dtype), targets.astype(np.int64)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_is_finite_and_exact_at_plus_minus_1e4(backend, xp, rng, dtype):
    logits, targets = extreme_logits(rng, dtype)
    want_loss, want_grad = reference_cross_entropy(logits, targets)
    assert want_loss > 1e3  # the case really is extreme
    rtol = 1e-6 if dtype == "float32" else 1e-12
    atol = 1e-7 if dtype == "float32" else 1e-15

    loss_fn = nn.CrossEntropyLoss()
    z, t = backend.asarray(logits), backend.asarray(targets)
    loss = loss_fn(z, t)
    grad = loss_fn.backward()
    assert loss.dtype == z.dtype and grad.dtype == z.dtype
    assert loss.shape == () and backends.namespace_name(loss) == backend.name
    got_loss, got_grad = backend.to_numpy(loss), backend.to_numpy(grad)
    assert np.isfinite(got_loss) and np.isfinite(got_grad).all()
    np.testing.assert_allclose(float(got_loss), want_loss, rtol=rtol)
    np.testing.assert_allclose(got_grad, want_grad, rtol=rtol, atol=atol)

    f_loss, cache = ops.softmax_cross_entropy(z, t)
    f_grad = ops.softmax_cross_entropy_backward(cache)
    np.testing.assert_allclose(float(backend.to_numpy(f_loss)), want_loss, rtol=rtol)
    np.testing.assert_allclose(backend.to_numpy(f_grad), want_grad, rtol=rtol, atol=atol)


def test_cross_entropy_matches_torch_at_extreme_logits(rng):
    torch = pytest.importorskip("torch")
    logits, targets = extreme_logits(rng, "float32")
    z = torch.tensor(logits, requires_grad=True)
    want = torch.nn.functional.cross_entropy(z, torch.from_numpy(targets))
    want.backward()
    loss_fn = nn.CrossEntropyLoss()
    got = loss_fn(logits, targets)
    np.testing.assert_allclose(float(got), want.item(), rtol=1e-6)
    np.testing.assert_allclose(loss_fn.backward(), z.grad.numpy(), rtol=1e-6, atol=1e-7)


# -- batch norm with one value per channel ---------------------------------------------

SINGLE = {
    "BatchNorm1d-(1,C)": (lambda: nn.BatchNorm1d(3), (1, 3)),
    "BatchNorm1d-(1,C,1)": (lambda: nn.BatchNorm1d(3), (1, 3, 1)),
    "BatchNorm2d-(1,C,1,1)": (lambda: nn.BatchNorm2d(3), (1, 3, 1, 1)),
}


@pytest.mark.parametrize("case", list(SINGLE))
def test_batch_norm_refuses_one_value_per_channel_in_training(backend, rng, case):
    build, shape = SINGLE[case]
    layer = build()
    x = backend.asarray(rng.standard_normal(shape).astype(np.float32))
    before = layer.state_dict()
    with pytest.raises(ValueError) as caught:
        layer(x)
    message = str(caught.value)
    assert message.startswith(type(layer).__name__ + "(3)")
    assert "more than 1 value per channel" in message and str(shape) in message
    after = layer.state_dict()  # running statistics untouched by the refused batch
    assert all(np.array_equal(before[k], after[k]) for k in before)
    # Eval mode normalises with the running statistics, so one value is fine there.
    layer.eval()
    out = backend.to_numpy(layer(x))
    np.testing.assert_allclose(out, backend.to_numpy(x) / np.sqrt(1.0 + 1e-5), rtol=1e-6)
