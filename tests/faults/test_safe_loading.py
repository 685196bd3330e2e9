"""Nothing a teammate hands over runs code or writes outside where it is asked to.

Head checkpoints are safetensors + JSON and are checked before anything is
allocated; a malicious pickle is refused without running (with a positive
control showing the payload is live); a crafted zip store is read without
writing anywhere.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from helpers import synth
from helpers.heads import store_head
from pathsegdiff.cli import app
from pathsegdiff.errors import CorruptStoreError, InputError, ModelLoadError
from pathsegdiff.store import create_store, open_store
from pathsegdiff.store.commands.copy import check_manifest, copy_store
from pathsegdiff.store.commands.verify import verify_store
from pathsegdiff.train_head.checkpoint import META, WEIGHTS, load_head

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "s.zarr"
    with create_store(path, synth.schema(), synth.records()) as w:
        w.write(range(6), synth.tile_batch(range(6)))
    return path


@pytest.fixture(scope="module")
def head(tmp_path_factory, store):
    return store_head(tmp_path_factory.mktemp("head") / "run", store)


def test_head_checkpoint_is_safetensors_and_json_only(head):
    assert sorted(p.name for p in head.iterdir()) == [META, WEIGHTS]
    assert json.loads((head / META).read_text())["format"] == "pathsegdiff-head"
    n = struct.unpack("<Q", (head / WEIGHTS).read_bytes()[:8])[0]  # safetensors: u64 header length, JSON header
    assert json.loads((head / WEIGHTS).read_bytes()[8 : 8 + n])["__metadata__"] == {"format": "pathsegdiff-head"}
    module, meta = load_head(head)
    assert meta.class_names == synth.CLASSES


def damaged_copy(head: Path, where: Path, meta=None, weights=None, raw_meta: bytes | None = None) -> Path:
    d = where / "damaged"
    shutil.copytree(head, d)
    if raw_meta is not None:
        (d / META).write_bytes(raw_meta)
    if meta is not None:
        doc = json.loads((d / META).read_text())
        meta(doc)
        (d / META).write_text(json.dumps(doc))
    if weights is not None:
        tensors = load_file(d / WEIGHTS)
        weights(tensors)
        save_file(tensors, d / WEIGHTS)
    return d


def _widen(doc):  # a conv 100000 wide: about 360 GB of float32 if it were ever built for real
    doc["head"]["hidden_channels"] = 100_000


BAD_HEADS = {
    "json-garbage": dict(raw_meta=b"\x00\xffnot json"),
    "json-not-an-object": dict(raw_meta=b'"a string"'),
    "json-nested-100000-deep": dict(raw_meta=b"[" * 100_000 + b"]" * 100_000),
    "json-huge-file": dict(raw_meta=b" " * (17 * 2**20) + b"{}"),
    "json-missing-fields": dict(meta=lambda d: d.pop("head")),
    "json-unknown-head": dict(meta=lambda d: d["head"].update(kind="transformer")),
    "json-huge-widths": dict(meta=_widen),
    "weights-wrong-shape": dict(weights=lambda t: t.update({k: torch.zeros(v.numel() + 1) for k, v in list(t.items())[:1]})),
    "weights-missing-tensor": dict(weights=lambda t: t.pop(next(iter(t)))),
    "weights-extra-tensor": dict(weights=lambda t: t.update(extra=torch.zeros(2))),
}


@pytest.mark.parametrize("case", BAD_HEADS)
def test_bad_head_checkpoint_is_refused_clearly(head, tmp_path, case):
    d = damaged_copy(head, tmp_path, **BAD_HEADS[case])
    with pytest.raises(InputError, match=f"{d}: cannot load the head checkpoint") as err:
        load_head(d)
    assert "\n" not in str(err.value)
    if case.startswith("weights") or case == "json-huge-widths":  # refused by comparing shapes, before building
        assert "head.safetensors does not match head.json" in str(err.value)


def test_safetensors_header_lying_about_its_data(head, store, tmp_path):
    d = damaged_copy(head, tmp_path)
    header = json.dumps({"w": {"dtype": "F32", "shape": [10**9], "data_offsets": [0, 4 * 10**9]}}).encode()
    (d / WEIGHTS).write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 64)
    with pytest.raises(InputError, match="cannot load the head checkpoint"):
        load_head(d)
    r = runner.invoke(app, ["evaluate", str(d), "--store", str(store)])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit) and str(d) in r.output


MALICIOUS = ["malicious_os_system", "malicious_exec", "malicious_protocol4", "malicious_allowlisted_module",
             "malicious_plain_pickle"]


@pytest.mark.parametrize("name", MALICIOUS)
def test_malicious_checkpoint_is_refused_without_running(model_dirs, name):
    from pathsegdiff.extract.backbones import load_backbone

    root, manifest = model_dirs
    model_dir = root / "models" / name
    marker = root / manifest[f"models/{name}"]["marker"]
    ckpt = model_dir / "checkpoints" / "last.ckpt"

    # Positive control: unpickled the unsafe way, the payload does run.
    if name == "malicious_plain_pickle":
        pickle.loads(ckpt.read_bytes())
    else:
        torch.load(ckpt, weights_only=False)
    assert marker.exists(), "the payload is not live; this test would prove nothing"
    marker.unlink()

    with pytest.raises(ModelLoadError, match=str(ckpt) if name != "malicious_allowlisted_module" else str(model_dir)):
        load_backbone(str(model_dir))
    assert not marker.exists()


def test_refusal_names_the_classes(model_dirs):
    from pathsegdiff.extract.backbones.checkpoint_io import read_state_dict

    root, _ = model_dirs
    with pytest.raises(ModelLoadError, match=r"posix\.system.*refusing to run code"):
        read_state_dict(root / "models" / "malicious_os_system" / "checkpoints" / "last.ckpt")
    with pytest.raises(ModelLoadError, match=r"builtins\.exec.*refusing to run code"):
        read_state_dict(root / "models" / "malicious_exec" / "checkpoints" / "last.ckpt")


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_crafted_zip_store_is_read_without_writing_anywhere(store, tmp_path, monkeypatch):
    evil = tmp_path / "deep" / "er" / "evil.zip"
    evil.parent.mkdir(parents=True)
    copy_store(store, evil)
    with zipfile.ZipFile(evil, "a") as zf:
        zf.writestr("../../escaped.txt", "pwned")
        zf.writestr("../../../../../../../../tmp/escaped-abs.txt", "pwned")
        zf.writestr(str(tmp_path / "escaped-absolute.txt"), "pwned")
        zf.writestr("labels/c/../../../escaped-dots.txt", "pwned")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    before, tmp_before = tree(tmp_path), set(os.listdir("/tmp"))

    fs = open_store(evil)
    assert fs.read_tile(3).labels.shape == (synth.TILE, synth.TILE)
    assert fs.table()["tile_id"][0] == "tile000"
    assert verify_store(evil).ok
    with pytest.raises(CorruptStoreError, match="escaped"):  # checking it against its manifest names them
        check_manifest(evil)
    for args in (["store", "info", str(evil)], ["store", "ls", str(evil)], ["store", "verify", str(evil)]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
    with pytest.raises(CorruptStoreError, match="escaped"):  # and a copy refuses the escaping keys
        copy_store(evil, work / "out.zarr")
    for args in (["store", "copy", str(evil), str(work / "out2.zarr")], ["store", "verify", "--manifest", str(evil)],
                 ["store", "pack", str(evil), str(work / "re.zip")]):
        r = runner.invoke(app, args)
        assert r.exit_code == 1 and "refusing object key" in r.output and isinstance(r.exception, SystemExit)

    assert tree(tmp_path) == before  # nothing new beside the zip, in its parents, or in the working directory
    assert not [n for n in set(os.listdir("/tmp")) - tmp_before if "escaped" in n]
