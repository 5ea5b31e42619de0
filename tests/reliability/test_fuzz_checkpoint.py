"""Fuzz ``xcnn.load``: a bad checkpoint raises the documented error and changes nothing.

``xcnn.io.load`` documents ``FileNotFoundError`` / ``IsADirectoryError`` for a
missing path or a directory, and ``ValueError`` for everything else that is wrong
with a file (not a checkpoint, corrupt, another architecture, missing state). For
each bad input here the test asserts that exact type, that the message names the
file, and that the model, the optimizer and xcnn's default RNG are exactly as
they were before the call (:class:`Snapshot`). A corrupted file may only load
if what it loads is identical to what was saved.

Checkpoints carry SHA-256 digests of their tensors and metadata, so an edited
file is refused at the checksum. To reach the checks behind it, the edit tests
also run on files *re-signed* by :func:`sign`, which recomputes the digests
from the format that ``xcnn.io`` documents (written here, not imported).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.numpy import save_file

import xcnn
from xcnn import backends, nn, optim

# 100 derandomized examples: with the checksums every byte-level corruption is
# refused up front, so more examples would add time, not coverage.
FUZZ = settings(
    max_examples=100,
    deadline=3000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


def build(seed: int = 0) -> tuple[nn.Module, optim.Optimizer, optim.lr_scheduler.StepLR]:
    """Conv, batch norm (buffers), dropout (a generator) and a linear head, with Adam."""
    g = np.random.default_rng(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, rng=g),
        nn.BatchNorm2d(2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.25, rng=seed),
        nn.Linear(2 * 4 * 4, 3, rng=g),
    )
    opt = optim.Adam(model.parameters(), lr=0.01)
    return model, opt, optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)


def train_step(model, opt) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 1, 6, 6)).astype(np.float32)
    y = np.array([0, 1, 2, 1], dtype=np.int64)
    loss_fn = nn.CrossEntropyLoss()
    opt.zero_grad()
    loss_fn(model(x), y)
    model.backward(loss_fn.backward())
    opt.step()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A real checkpoint of a trained model: (path, bytes, trained model state, optimizer)."""
    with backends.use("numpy"):
        model, opt, sched = build()
        train_step(model, opt)
        sched.step()
        path = tmp_path_factory.mktemp("ck") / "real.safetensors"
        xcnn.save(path, model, opt, sched, epoch=1, step=1, note="fuzz")
        return path, path.read_bytes(), model.state_dict(), opt.state_dict()


class Snapshot:
    """Everything ``load`` may write: model arrays, optimizer state, the default RNG."""

    def __init__(self, model, opt):
        self.model, self.opt = model, opt
        self.state = model.state_dict()
        self.opt_state = json.dumps(_plain(opt.state_dict()), sort_keys=True)
        self.rng = json.dumps(backends.default_generator().bit_generator.state, sort_keys=True)

    def assert_unchanged(self) -> None:
        after = self.model.state_dict()
        changed = [k for k in self.state if not np.array_equal(self.state[k], after[k])]
        assert not changed, f"a rejected checkpoint changed the model: {changed}"
        opt_state = json.dumps(_plain(self.opt.state_dict()), sort_keys=True)
        assert opt_state == self.opt_state, "a rejected checkpoint changed the optimizer"
        rng = json.dumps(backends.default_generator().bit_generator.state, sort_keys=True)
        assert rng == self.rng, "a rejected checkpoint changed the default RNG"


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def expect_rejected(path, error_type=ValueError) -> str:
    """Load ``path`` into a fresh model + optimizer; assert the error and no side effect."""
    model, opt, sched = build(seed=7)
    train_step(model, opt)  # the optimizer has state of its own to lose
    snap = Snapshot(model, opt)
    with pytest.raises(error_type) as caught:
        xcnn.load(path, model, opt, sched)
    assert str(path) in str(caught.value), f"error does not name the file: {caught.value}"
    snap.assert_unchanged()
    return str(caught.value)


def load_or_reject(path, saved) -> None:
    """The oracle for corrupted files: ValueError with no side effect, or an exact load."""
    model, opt, sched = build(seed=7)
    train_step(model, opt)
    snap = Snapshot(model, opt)
    try:
        meta = xcnn.load(path, model, opt, sched)
    except ValueError as error:
        assert str(path) in str(error), f"error does not name the file: {error}"
        snap.assert_unchanged()
        return
    _, _, state, opt_state = saved
    now = model.state_dict()
    assert all(np.array_equal(state[k], now[k]) for k in state), (
        "a corrupted checkpoint loaded different weights without an error"
    )
    assert json.dumps(_plain(opt.state_dict()), sort_keys=True) == json.dumps(
        _plain(opt_state), sort_keys=True
    ), "a corrupted checkpoint loaded a different optimizer state without an error"
    assert meta["note"] == "fuzz" and meta["epoch"] == 1


def test_the_real_checkpoint_round_trips(saved):
    path = saved[0]
    model, opt, sched = build(seed=7)
    xcnn.load(path, model, opt, sched)
    assert all(np.array_equal(saved[2][k], v) for k, v in model.state_dict().items())


# -- random bytes, truncation, bit flips ----------------------------------------------


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=200),
        # A plausible little-endian header length (tiny, exact-ish or absurd) over junk.
        st.tuples(st.sampled_from([0, 2, 8, 100, 2**31, 2**64 - 1]), st.binary(max_size=120)).map(
            lambda t: t[0].to_bytes(8, "little") + t[1]
        ),
        st.binary(max_size=100).map(lambda b: len(b).to_bytes(8, "little") + b),
    )
)
def test_random_bytes_are_rejected(tmp_path, no_hang, data):
    path = tmp_path / "random.safetensors"
    path.write_bytes(data)
    with no_hang(5.0):
        expect_rejected(path)


@FUZZ
@given(fraction=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_checkpoint_is_rejected(tmp_path, no_hang, saved, fraction):
    good = saved[1]
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(good[: int(fraction * len(good))])
    with no_hang(5.0):
        expect_rejected(path)


@FUZZ
@given(extra=st.binary(min_size=1, max_size=64))
def test_extended_checkpoint_is_rejected_or_exact(tmp_path, no_hang, saved, extra):
    path = tmp_path / "extended.safetensors"
    path.write_bytes(saved[1] + extra)
    with no_hang(5.0):
        load_or_reject(path, saved)


@FUZZ
@given(where=st.floats(0.0, 1.0, exclude_max=True), bit=st.integers(0, 7))
def test_bit_flipped_checkpoint_is_rejected_or_exact(tmp_path, no_hang, saved, where, bit):
    good = bytearray(saved[1])
    good[int(where * len(good))] ^= 1 << bit
    path = tmp_path / "flipped.safetensors"
    path.write_bytes(bytes(good))
    with no_hang(5.0):
        load_or_reject(path, saved)


def _tensor_region(path) -> tuple[int, dict]:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return 8 + n, json.loads(data[8 : 8 + n])


def test_a_flipped_weight_bit_is_detected(tmp_path, saved):
    """No silent corruption: one flipped bit in a stored weight must not load."""
    start, header = _tensor_region(saved[0])
    begin, _ = header["model.5.weight"]["data_offsets"]
    data = bytearray(saved[1])
    data[start + begin + 2] ^= 0x04
    path = tmp_path / "flipped-weight.safetensors"
    path.write_bytes(bytes(data))
    expect_rejected(path)


# -- valid safetensors files that disagree with the model -----------------------------


def read_parts(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with safe_open(path, framework="numpy") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata())


def sign(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> dict[str, str]:
    """``metadata`` with the digests ``xcnn.save`` would write for ``tensors``.

    From ``xcnn.io``'s documentation: ``tensors_sha256`` (inside the JSON) hashes,
    in sorted key order, the line ``json.dumps([key, dtype.str, shape]) + "\\n"`` and
    the little-endian bytes of each tensor; ``xcnn_sha256`` hashes the JSON text.
    Metadata that is not a JSON object keeps its text and gets only the second.
    """
    digest = hashlib.sha256()
    for key in sorted(tensors):
        array = np.asarray(tensors[key])
        little = array.astype(array.dtype.newbyteorder("<"))
        digest.update((json.dumps([key, little.dtype.str, list(little.shape)]) + "\n").encode())
        digest.update(little.tobytes())
    signed = dict(metadata)
    try:
        blob = json.loads(signed["xcnn"])
    except (ValueError, RecursionError):
        blob = None
    if isinstance(blob, dict):
        blob["tensors_sha256"] = digest.hexdigest()
        signed["xcnn"] = json.dumps(blob)
    signed["xcnn_sha256"] = hashlib.sha256(signed["xcnn"].encode()).hexdigest()
    return signed


def test_sign_reproduces_what_xcnn_save_writes(saved):
    """The re-signing oracle agrees with xcnn.save, so re-signed files are what xcnn would write."""
    tensors, metadata = read_parts(saved[0])
    assert sign(tensors, metadata) == metadata


def rewrite(tmp_path, saved, name, tensors=None, metadata=None, edit=None, signed=False):
    """Write a valid safetensors file from the real checkpoint's parts, edited (and re-signed)."""
    base_tensors, base_meta = read_parts(saved[0])
    tensors = dict(base_tensors if tensors is None else tensors)
    metadata = dict(base_meta if metadata is None else metadata)
    if edit is not None:
        edit(tensors, metadata)
    if signed:
        metadata = sign(tensors, metadata)
    path = tmp_path / name
    save_file(tensors, path, metadata=metadata)
    return path


def _drop(key):
    return lambda t, m: t.pop(key)


def _add(key, value):
    return lambda t, m: t.__setitem__(key, value)


def _reshape(key, shape):
    return lambda t, m: t.__setitem__(key, np.zeros(shape, t[key].dtype))


def _retype(key, dtype):
    return lambda t, m: t.__setitem__(key, t[key].astype(dtype))


def variant(kind: str) -> nn.Module:
    """A model that differs from :func:`build`'s in one way, for a real ``xcnn.save``."""
    g = np.random.default_rng(3)
    conv = nn.Conv2d(1, 2, 3, bias=kind != "missing-bias", rng=g)
    norm = nn.ReLU() if kind == "no-batchnorm" else nn.BatchNorm2d(2)
    head = nn.Linear(2 * 4 * 4, 4 if kind == "wider-head" else 3, rng=g)
    layers = [conv, norm, nn.ReLU(), nn.Flatten(), nn.Dropout(0.25, rng=0), head]
    if kind == "extra-layer":
        layers.append(nn.Linear(3, 3, rng=g))
    model = nn.Sequential(*layers)
    if kind == "int32-weight":
        conv.weight.data = np.arange(18, dtype=np.int32).reshape(2, 1, 3, 3)
    elif kind == "bool-weight":
        head.weight.data = np.ones((3, 32), dtype=np.bool_)
    elif kind == "uint8-buffer":
        norm._set_buffer("running_mean", np.array([7, 9], dtype=np.uint8))
    elif kind == "float64-model":
        model.double()
    return model


ARCHITECTURES = {
    "missing-bias": "0.bias",
    "no-batchnorm": "1.running_mean",
    "wider-head": "5.weight",
    "extra-layer": "6.weight",
    "int32-weight": "0.weight",
    "bool-weight": "5.weight",
    "uint8-buffer": "1.running_mean",
}


@pytest.mark.parametrize("kind", list(ARCHITECTURES))
def test_checkpoint_of_another_architecture_or_dtype_is_rejected(tmp_path, kind):
    """Real ``xcnn.save`` files whose tensors disagree with the model: names, shapes, dtypes."""
    path = xcnn.save(tmp_path / f"{kind}.safetensors", variant(kind))
    model, _, _ = build(seed=7)
    before = model.state_dict()
    with pytest.raises(ValueError) as caught:
        xcnn.load(path, model)
    message = str(caught.value)
    assert str(path) in message and ARCHITECTURES[kind] in message, message
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before), "the model changed"


def test_a_float64_checkpoint_loads_cast_as_documented(tmp_path):
    """``load`` documents a copy to each parameter's dtype: float64 values arrive as float32."""
    source = variant("float64-model")
    path = xcnn.save(tmp_path / "f64.safetensors", source)
    model, _, _ = build(seed=7)
    xcnn.load(path, model)
    for key, value in source.state_dict().items():
        got = model.state_dict()[key]
        assert got.dtype == (np.float32 if value.dtype == np.float64 else value.dtype)
        np.testing.assert_array_equal(got, value.astype(got.dtype))


# Module.load_state_dict itself (state dicts that never were a file, e.g. torch's):
# (key, value of another kind) for build()'s model.
OTHER_KIND = {
    "int-weight": ("0.weight", np.arange(18, dtype=np.int64).reshape(2, 1, 3, 3)),
    "bool-bias": ("5.bias", np.ones(3, dtype=np.bool_)),
    "uint8-buffer": ("1.running_var", np.full(2, 3, dtype=np.uint8)),
    "float-count": ("1.num_batches_tracked", np.asarray(2.5)),
}


@pytest.mark.parametrize("case", list(OTHER_KIND))
def test_load_state_dict_refuses_values_of_another_kind(backend, case):
    model, _, _ = build(seed=7)
    before = model.state_dict()
    key, value = OTHER_KIND[case]
    given = {**before, key: value}
    with pytest.raises(TypeError) as caught:
        model.load_state_dict(given)
    expected = before[key].dtype.name
    assert f"{key}: expected {expected}, got {value.dtype.name}" in str(caught.value)
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before), "the model changed"
    # Within a kind, values are cast to the model's dtype.
    same_kind = {
        k: v.astype(np.float64 if v.dtype.kind == "f" else np.int32) for k, v in before.items()
    }
    model.load_state_dict(same_kind)
    for k, v in model.state_dict().items():
        assert v.dtype == before[k].dtype and np.array_equal(v, before[k]), k


# Files edited after saving (tensors swapped, added, dropped, retyped): the
# checkpoint no longer is what xcnn.save wrote, so it must be refused, whether
# by a checksum or by the architecture checks.
TENSOR_EDITS = {
    "drop-weight": _drop("model.0.weight"),
    "drop-buffer": _drop("model.1.running_var"),
    "add-model-key": _add("model.9.weight", np.zeros(3, np.float32)),
    "unknown-prefix": _add("evil.payload", np.zeros(3, np.uint8)),
    "weight-shape": _reshape("model.5.weight", (3, 31)),
    "scalar-for-vector": _reshape("model.1.running_mean", ()),
    "optimizer-state-shape": _reshape("optim.state.0.exp_avg", (5,)),
    "optimizer-state-index": _add("optim.state.99.exp_avg", np.zeros(2, np.float32)),
    "optimizer-state-name": _add("optim.state.0.surprise", np.zeros(2, np.float32)),
    "weight-int32": _retype("model.0.weight", np.int32),
    "weight-bool": _retype("model.5.weight", np.bool_),
    "buffer-uint8": _retype("model.1.running_mean", np.uint8),
    "optimizer-int64": _retype("optim.state.0.exp_avg", np.int64),
}


SIGNED = pytest.mark.parametrize("signed", [False, True], ids=["as-edited", "re-signed"])


@SIGNED
@pytest.mark.parametrize("case", list(TENSOR_EDITS))
def test_edited_tensors_are_rejected(tmp_path, saved, case, signed):
    path = rewrite(tmp_path, saved, f"{case}.safetensors", edit=TENSOR_EDITS[case], signed=signed)
    message = expect_rejected(path)
    if not signed:
        assert "SHA-256" in message, message


# -- malformed metadata ---------------------------------------------------------------


def _blob_edit(change):
    def edit(tensors, metadata):
        blob = json.loads(metadata["xcnn"])
        change(blob)
        metadata["xcnn"] = json.dumps(blob)

    return edit


def _set(*path_and_value):
    *path, value = path_and_value

    def change(blob):
        node = blob
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


def _pop(*path):
    def change(blob):
        node = blob
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return change


RAW_METADATA = {
    "not-json": "{not json",
    "json-array": "[1, 2, 3]",
    "json-null": "null",
    "json-string": '"checkpoint"',
    "truncated-json": '{"format": 1, "rng": {"default"',
    "deep-nesting": '{"format": ' + "[" * 5000 + "]" * 5000 + "}",
}

BLOB_EDITS = {
    "format-missing": _pop("format"),
    "format-future": _set("format", 99),
    "format-string": _set("format", "1"),
    "rng-missing": _pop("rng"),
    "rng-not-object": _set("rng", "seed"),
    "rng-default-missing": _pop("rng", "default"),
    "rng-default-string": _set("rng", "default", "zz"),
    "rng-default-wrong-generator": _set("rng", "default", {"bit_generator": "MT19937"}),
    "rng-default-huge-state": _set("rng", "default", "state", "state", 2**200),
    "rng-modules-missing": _pop("rng", "modules"),
    "rng-modules-list": _set("rng", "modules", [1]),
    "rng-module-state-string": _set("rng", "modules", "4", "zz"),
    "optimizer-null": _set("optimizer", None),
    "optimizer-class": _set("optimizer", "class", "SGD"),
    "optimizer-groups-string": _set("optimizer", "param_groups", "abc"),
    "optimizer-groups-empty": _set("optimizer", "param_groups", []),
    "optimizer-lr-string": _set("optimizer", "param_groups", 0, "lr", "fast"),
    "optimizer-betas-short": _set("optimizer", "param_groups", 0, "betas", [0.9]),
    "optimizer-scalars-list": _set("optimizer", "scalars", [1]),
    "optimizer-step-string": _set("optimizer", "scalars", "0", "step", "many"),
    "scheduler-null": _set("scheduler", None),
    "scheduler-string": _set("scheduler", "x"),
    "config-list": _set("config", [1, 2]),
    "config-string": _set("config", "x"),
}


def _raw_meta(text):
    return lambda tensors, metadata: metadata.__setitem__("xcnn", text)


# Re-signing needs the "xcnn" key; the last two cases are about its absence.
METADATA_CASES = [(case, False) for case in [*RAW_METADATA, *BLOB_EDITS]]
METADATA_CASES += [("no-xcnn-key", False), ("no-metadata", False)]
METADATA_CASES += [(case, True) for case in [*RAW_METADATA, *BLOB_EDITS]]


@pytest.mark.parametrize(
    ("case", "signed"),
    METADATA_CASES,
    ids=[f"{case}{'-re-signed' if signed else ''}" for case, signed in METADATA_CASES],
)
def test_malformed_metadata_is_rejected(tmp_path, saved, case, signed):
    if case in RAW_METADATA:
        edit = _raw_meta(RAW_METADATA[case])
    elif case in BLOB_EDITS:
        edit = _blob_edit(BLOB_EDITS[case])
    elif case == "no-xcnn-key":

        def edit(tensors, metadata):
            metadata["other"] = metadata.pop("xcnn")

    else:
        tensors, _ = read_parts(saved[0])
        path = tmp_path / "bare.safetensors"
        save_file(tensors, path)
        expect_rejected(path)
        return
    path = rewrite(tmp_path, saved, f"{case}.safetensors", edit=edit, signed=signed)
    message = expect_rejected(path)
    if not signed and case != "no-xcnn-key":
        assert "SHA-256" in message, message


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


@settings(FUZZ, max_examples=150)
@given(draw=st.data())
def test_metadata_with_a_random_value_anywhere(tmp_path, no_hang, saved, draw):
    """Replace one node of the JSON blob by a random JSON value (or delete it), re-signed."""
    tensors, metadata = read_parts(saved[0])
    blob = json.loads(metadata["xcnn"])
    paths = [p for p in _paths(blob) if p]
    target = draw.draw(st.sampled_from(paths))
    node = blob
    for key in target[:-1]:
        node = node[key]
    if draw.draw(st.booleans()) and isinstance(node, dict):
        del node[target[-1]]
    else:
        node[target[-1]] = draw.draw(json_values)
    path = tmp_path / "random-meta.safetensors"
    save_file(tensors, path, metadata=sign(tensors, {"xcnn": json.dumps(blob)}))
    model, opt, sched = build(seed=7)
    train_step(model, opt)
    snap = Snapshot(model, opt)
    try:
        with no_hang(5.0):
            xcnn.load(path, model, opt, sched)
    except ValueError as error:
        assert str(path) in str(error)
        snap.assert_unchanged()
    # Any other exception type propagates and fails the test: only ValueError is documented.


# -- files that are not checkpoints and would run code if unpickled -------------------

MARKER_ENV = "XCNN_RELIABILITY_MARKER"


class Evil:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("kind", ["pickle", "torch-zip", "npz-object", "pickle-in-metadata"])
def test_code_carrying_files_are_rejected_without_running(tmp_path, saved, kind):
    marker = tmp_path / "code-ran"
    payload = pickle.dumps(Evil(marker))
    path = tmp_path / f"{kind}.ckpt"
    if kind == "pickle":
        path.write_bytes(payload)
    elif kind == "torch-zip":  # the layout torch.save writes: a zip holding data.pkl
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", payload)
            archive.writestr("archive/version", "3\n")
    elif kind == "npz-object":
        with open(path, "wb") as stream:
            np.savez(stream, weight=np.array([Evil(marker)], dtype=object))
    else:
        tensors, metadata = read_parts(saved[0])
        metadata["xcnn"] = payload.hex()
        metadata["pickle"] = payload.decode("latin-1")
        save_file(tensors, path, metadata=metadata)
    assert not marker.exists()
    expect_rejected(path)
    assert not marker.exists(), "loading a checkpoint executed code"


# -- paths that are not regular files ---------------------------------------------------


def test_missing_path(tmp_path):
    expect_rejected(tmp_path / "nowhere.safetensors", FileNotFoundError)


def test_dangling_symlink(tmp_path):
    link = tmp_path / "dangling.safetensors"
    link.symlink_to(tmp_path / "gone")
    expect_rejected(link, FileNotFoundError)


def test_directory(tmp_path):
    folder = tmp_path / "folder.safetensors"
    folder.mkdir()
    expect_rejected(folder, IsADirectoryError)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_refused_without_blocking(tmp_path, no_hang):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    with no_hang(5.0):  # opening a FIFO for reading would block forever
        expect_rejected(fifo)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_symlink_to_fifo_is_refused(tmp_path, no_hang):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "link.safetensors"
    link.symlink_to(fifo)
    with no_hang(5.0):
        expect_rejected(link)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_character_device_is_refused(no_hang):
    with no_hang(5.0):  # /dev/zero never ends: reading it would not stop
        expect_rejected("/dev/zero")


def test_symlink_to_a_real_checkpoint_loads(tmp_path, saved):
    link = tmp_path / "link.safetensors"
    link.symlink_to(saved[0])
    model, opt, sched = build(seed=7)
    xcnn.load(link, model, opt, sched)
    assert all(np.array_equal(saved[2][k], v) for k, v in model.state_dict().items())
