"""No pickle anywhere: the package source never reaches a code-executing loader.

Two proofs:

* static: every ``xcnn/**/*.py`` is tokenized and parsed; code (not strings
  or comments, so a docstring may say "never unpickles") must not name
  ``pickle`` / ``marshal`` / ``shelve`` / ``dill``, call builtin ``eval`` /
  ``exec``, call ``torch.load``, or call ``np.load`` without ``allow_pickle=False``;
* dynamic: checkpoints, IDX files and CIFAR batches load with every pickle entry
  point patched to raise.
"""

from __future__ import annotations

import ast
import io
import pickle
import tokenize
from pathlib import Path

import numpy as np
import pytest

import xcnn
from xcnn import backends, data, nn, optim

PACKAGE = Path(xcnn.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle"}
NUMPY_ALIASES = {"np", "numpy", "xp"}


def _names_in_code(path: Path) -> list[tuple[int, str]]:
    """(line, problem) for forbidden names among code tokens (strings and comments skipped)."""
    problems = []
    tokens = list(tokenize.generate_tokens(io.StringIO(path.read_text()).readline))
    for i, tok in enumerate(tokens):
        if tok.type != tokenize.NAME:
            continue
        previous = tokens[i - 1].string if i else ""
        following = tokens[i + 1].string if i + 1 < len(tokens) else ""
        if tok.string in FORBIDDEN_MODULES:
            problems.append((tok.start[0], f"names {tok.string}"))
        elif tok.string in ("eval", "exec") and previous not in (".", "def") and following == "(":
            problems.append((tok.start[0], f"calls builtin {tok.string}()"))
    return problems


def _calls(path: Path) -> list[tuple[int, str]]:
    """(line, problem) for torch.load and np.load(...) without allow_pickle=False."""
    problems = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value
        if node.func.attr != "load" or not isinstance(owner, ast.Name):
            continue
        if owner.id == "torch":
            problems.append((node.lineno, "calls torch.load"))
        elif owner.id in NUMPY_ALIASES:
            safe = any(
                kw.arg == "allow_pickle"
                and isinstance(kw.value, ast.Constant)
                and kw.value.value is False
                for kw in node.keywords
            )
            if not safe:
                problems.append((node.lineno, f"calls {owner.id}.load without allow_pickle=False"))
        if owner.id == "pickle":
            problems.append((node.lineno, "calls pickle.load"))
    return problems


def test_the_scan_sees_the_whole_package():
    names = {p.relative_to(PACKAGE).as_posix() for p in SOURCES}
    assert {"io.py", "train.py", "data/idx.py", "data/cifar.py", "nn/module.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_source_has_no_code_executing_loader(path):
    problems = _names_in_code(path) + _calls(path)
    assert not problems, "\n".join(f"{path}:{line}: {what}" for line, what in problems)


SNIPPETS = {
    "import pickle": True,
    "from pickle import loads": True,
    "import marshal as m": True,
    "x = eval('1')": True,
    "exec(code)": True,
    "w = torch.load(f)": True,
    "a = np.load(f)": True,
    "a = np.load(f, allow_pickle=True)": True,
    "a = np.load(f, allow_pickle=False)": False,
    "model.eval()": False,
    "def eval(self):\n    return self": False,
    '"""Nothing is unpickled; no pickle, no eval()."""': False,
    "# pickle would be unsafe here": False,
}


@pytest.mark.parametrize("snippet", list(SNIPPETS))
def test_the_scanner_catches_what_it_should(tmp_path, snippet):
    """The scan is itself tested, so a clean result means something."""
    path = tmp_path / "snippet.py"
    path.write_text(snippet + "\n")
    found = bool(_names_in_code(path) + _calls(path))
    assert found is SNIPPETS[snippet]


# -- runtime ----------------------------------------------------------------------------


class PickleUsed(AssertionError):
    pass


@pytest.fixture
def pickle_forbidden(monkeypatch):
    """Every pickle entry point raises; also numpy's pickle-enabled np.load."""

    def refuse(*args, **kwargs):
        raise PickleUsed("pickle was used")

    class Refusing:
        def __init__(self, *args, **kwargs):
            raise PickleUsed("pickle.Unpickler was used")

    for name in ("loads", "load", "dumps", "dump"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(pickle, "Unpickler", Refusing)
    monkeypatch.setattr(pickle, "Pickler", Refusing)
    original_np_load = np.load

    def guarded_np_load(*args, allow_pickle=False, **kwargs):
        if allow_pickle:
            raise PickleUsed("np.load(allow_pickle=True) was used")
        return original_np_load(*args, allow_pickle=False, **kwargs)

    monkeypatch.setattr(np, "load", guarded_np_load)


def test_checkpoint_round_trip_without_pickle(tmp_path, pickle_forbidden):
    with backends.use("numpy"):
        g = np.random.default_rng(0)
        model = nn.Sequential(nn.Linear(4, 3, rng=g), nn.BatchNorm1d(3), nn.Dropout(0.5, rng=1))
        opt = optim.Adam(model.parameters(), lr=0.01)
        sched = optim.lr_scheduler.StepLR(opt, step_size=1)
        loss_fn = nn.MSELoss()
        x = g.standard_normal((5, 4)).astype(np.float32)
        loss_fn(model(x), np.zeros((5, 3), np.float32))
        model.backward(loss_fn.backward())
        opt.step()
        sched.step()
        path = xcnn.save(tmp_path / "ck.safetensors", model, opt, sched, epoch=1, step=1, tag="t")

        fresh = nn.Sequential(nn.Linear(4, 3, rng=5), nn.BatchNorm1d(3), nn.Dropout(0.5, rng=2))
        fresh_opt = optim.Adam(fresh.parameters(), lr=0.5)
        fresh_sched = optim.lr_scheduler.StepLR(fresh_opt, step_size=1)
        meta = xcnn.load(path, fresh, fresh_opt, fresh_sched)
    assert meta["tag"] == "t" and meta["epoch"] == 1
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key], value)
    assert fresh_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_data_readers_without_pickle(tmp_path, pickle_forbidden):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    data.write_idx(tmp_path / "x-idx3-ubyte.gz", images)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "x-idx3-ubyte.gz"), images)
    record = np.zeros(1 + 3072, np.uint8)
    record[0] = 3
    (tmp_path / "test_batch.bin").write_bytes(record.tobytes())
    got, labels = data.read_cifar10_batch(tmp_path / "test_batch.bin")
    assert got.shape == (1, 3, 32, 32) and labels.tolist() == [3]
    sample = data.load_dataset("sample", train=False)
    assert sample.images.shape[1:] == (1, 28, 28)


def test_the_runtime_guard_works(pickle_forbidden):
    with pytest.raises(PickleUsed):
        pickle.loads(b"\x80\x04K\x01.")
    with pytest.raises(PickleUsed):
        np.load(io.BytesIO(b""), allow_pickle=True)
