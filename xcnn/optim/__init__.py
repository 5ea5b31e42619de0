"""Optimizers (SGD, Adam, AdamW) and learning-rate schedules (``xcnn.optim.lr_scheduler``).

Update rules are PyTorch's; state is created lazily at the first ``step()`` in
each parameter's own namespace, so ``model.to("cupy")`` after building the
optimizer is safe.
"""

from xcnn.optim import lr_scheduler
from xcnn.optim.adam import Adam, AdamW
from xcnn.optim.optimizer import Optimizer
from xcnn.optim.sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "lr_scheduler"]
