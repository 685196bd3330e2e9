"""Compact stores: round trips per encoding through the store, identity, `store compact`, plain-zarr decoding."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from helpers import synth
from pathsegdiff.errors import ConfigError, CorruptStoreError, IdentityMismatchError, SchemaError, StoreExistsError
from pathsegdiff.store import TileBatch, create_store, open_or_create, open_store
from pathsegdiff.store.commands.compact import compact_store
from pathsegdiff.store.encodings import Calibration, bases_sha256, fit_bases, parse_preset, relative_error
from pathsegdiff.store.commands.verify import verify_store

DOC = Path(__file__).parents[2] / "docs" / "store-format.md"
# Relative error each encoding must stay within on rank-3 features (6 and 4 channels): pca4 keeps rank 3 whole.
BOUNDS = {"float16": 1e-3, "int8": 0.01, "pca4": 2e-3, "pca4-int8": 0.015, "pca64": 2e-3, "pca64-int8": 0.015}


def low_rank_batch(indices, rank: int = 3) -> TileBatch:
    """synth.tile_batch with features of rank ``rank`` over channels (as correlated UNet channels are)."""
    batch = synth.tile_batch(indices)
    for t, per in batch.features.items():
        for b, x in per.items():
            mix = np.random.default_rng([t, x.shape[1]]).normal(size=(x.shape[1], rank))
            per[b] = np.einsum("cr,nrhw->nchw", mix, x[:, :rank]).astype(np.float32)
    return batch


def compact_schema(preset: str, bases=None, **over):
    return synth.schema(encoding=preset, basis_sha256=bases_sha256(bases) if bases else "", **over)


def bases_for(preset: str, tiles=range(6)):
    enc = parse_preset(preset)
    if not enc.uses_pca:
        return None
    feats = low_rank_batch(tiles).features
    return fit_bases({(t, b): x for t, d in feats.items() for b, x in d.items()}, enc.components, Calibration())


def make_store(path: Path, preset: str, n_written: int = synth.N_TILES) -> Path:
    bases = bases_for(preset)
    with create_store(path, compact_schema(preset, bases), synth.records(), bases=bases) as w:
        w.write(range(n_written), low_rank_batch(range(n_written)))
    return path


@pytest.mark.parametrize("preset", list(BOUNDS))
def test_round_trip_per_encoding_within_its_bound(tmp_path, preset):
    fs = open_store(make_store(tmp_path / "s.zarr", preset))
    want = low_rank_batch(range(synth.N_TILES))
    enc = parse_preset(preset)
    for i in (0, 7):
        tile = fs.read_tile(i)
        assert tile.labels is not None and tile.rgb is not None
        for t in fs.timesteps:
            for b in fs.blocks:
                x = tile.features[t][b]
                assert x.shape == want.features[t][b][i].shape
                assert x.dtype == (np.float16 if enc.is_default else np.float32)
                assert relative_error(want.features[t][b][i], x) < BOUNDS[preset]
                np.testing.assert_array_equal(fs.read_features(i, t, b), x)
    assert verify_store(fs.location.local_dir).ok


def test_stored_values_are_what_the_preset_says(tmp_path):
    fs = open_store(make_store(tmp_path / "s.zarr", "pca4-int8"))
    g = fs.group()
    assert g["features/t50/up1"].dtype == np.int8 and g["features/t50/up1"].shape[1:] == (4, 8, 8)
    assert g["features/t50/up1.scale_offset"].shape[1:] == (2, 4)
    assert g["pca/t50/up1/components"].shape == (4, 6) and g["pca/t150/up2/mean"].shape == (4,)
    assert fs.schema.feature_bytes_per_tile() < synth.schema().feature_bytes_per_tile()


def test_default_encoding_keeps_the_float16_identity():
    fields = synth.spec().identity_fields()
    assert "encoding" not in fields and "basis_sha256" not in fields  # stores made before stay the same
    assert synth.spec(encoding="int8").identity() != synth.spec().identity()
    assert synth.spec(encoding="pca4", basis_sha256="a").identity() != synth.spec(encoding="pca4",
                                                                                  basis_sha256="b").identity()


def test_appending_with_another_preset_is_refused(tmp_path):
    path = make_store(tmp_path / "s.zarr", "int8", n_written=3)
    bases = bases_for("pca4-int8")
    with pytest.raises(IdentityMismatchError, match="encoding"):
        open_or_create(path, compact_schema("pca4-int8", bases), synth.records(), bases=bases)
    with pytest.raises(IdentityMismatchError, match="encoding"):
        open_or_create(path, synth.schema(), synth.records())
    with open_or_create(path, compact_schema("int8"), synth.records()) as w:  # the same preset resumes
        w.write(range(3, 6), low_rank_batch(range(3, 6)))


def test_a_pca_store_needs_its_bases(tmp_path):
    with pytest.raises(SchemaError, match="PCA basis"):
        create_store(tmp_path / "s.zarr", compact_schema("pca4"), synth.records())


def _doc_decoder() -> str:
    text = DOC.read_text()
    section = text[text.index("## Decoding compact encodings"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.parametrize("preset", ["int8", "pca4", "pca4-int8"])
def test_plain_zarr_decoding_as_documented_equals_read_tile(tmp_path, preset):
    path = make_store(tmp_path / "s.zarr", preset)
    script = ("import sys, json, numpy as np\npath, i = sys.argv[1], int(sys.argv[2])\n" + _doc_decoder()
              + "\nnp.save(sys.argv[3], x)\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith('pathsegdiff'))))")
    out = tmp_path / "x.npy"
    r = subprocess.run([sys.executable, "-c", script, str(path), "5", str(out)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []  # plain zarr and numpy only
    np.testing.assert_allclose(np.load(out), open_store(path).read_tile(5).features[50]["up1"], rtol=1e-6, atol=1e-6)


@pytest.fixture
def float16_store(tmp_path):
    path = tmp_path / "f16.zarr"
    with create_store(path, synth.schema(), synth.records()) as w:
        w.write(range(11), low_rank_batch(range(11)))
        w.mark_failed([11], ["unreadable: test"])
    return path


@pytest.mark.parametrize("preset", ["int8", "pca4-int8"])
def test_store_compact_carries_everything_over(float16_store, tmp_path, preset):
    summary = compact_store(float16_store, tmp_path / "c.zarr", preset, Calibration(tiles=4))
    assert summary.tiles == 11 and summary.failed == 1 and summary.feature_bytes < summary.source_feature_bytes
    src, out = open_store(float16_store), open_store(tmp_path / "c.zarr")
    assert out.identity != src.identity and out.schema.features.encoding == preset
    assert out.provenance["compacted_from"]["identity"] == src.identity
    np.testing.assert_array_equal(out.status(), src.status())
    assert out.fail_reasons() == src.fail_reasons()
    for k, v in src.table().items():
        np.testing.assert_array_equal(out.table()[k], v)
    for i in (0, 10):
        a, b = src.read_tile(i), out.read_tile(i)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.rgb, b.rgb)
        np.testing.assert_array_equal(a.ssl, b.ssl)
        assert relative_error(a.features[150]["up2"], b.features[150]["up2"]) < BOUNDS[preset]
    assert verify_store(tmp_path / "c.zarr").ok


def test_store_compact_refuses_unfinished_damaged_and_compact_stores(tmp_path, float16_store):
    partial = tmp_path / "partial.zarr"
    with create_store(partial, synth.schema(), synth.records()) as w:
        w.write(range(5), low_rank_batch(range(5)))
    with pytest.raises(SchemaError, match="unfinished, 7 tiles still todo"):
        compact_store(partial, tmp_path / "c1.zarr", "int8")
    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(float16_store, damaged)
    (damaged / "features" / "t50" / "up1" / "c.3.0.0.0").unlink()  # tile 3's chunk ("." chunk keys)
    with pytest.raises(CorruptStoreError, match="damaged"):
        compact_store(damaged, tmp_path / "c2.zarr", "int8")
    compact_store(float16_store, tmp_path / "c3.zarr", "int8")
    with pytest.raises(SchemaError, match="already int8"):
        compact_store(tmp_path / "c3.zarr", tmp_path / "c4.zarr", "pca4")
    assert not (tmp_path / "c1.zarr").exists() and not (tmp_path / "c2.zarr").exists()


def test_xarray_view_decodes(tmp_path):
    fs = open_store(make_store(tmp_path / "s.zarr", "pca4-int8"))
    ds = fs.to_xarray()
    x = ds["t50/up1"].isel(tile=4).values
    assert ds["t50/up1"].dims == ("tile", "c_up1", "h_up1", "w_up1")
    np.testing.assert_allclose(x, fs.read_tile(4).features[50]["up1"], rtol=1e-6, atol=1e-6)


def test_cli_store_compact_and_info(float16_store, tmp_path):
    from pathsegdiff.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["store", "compact", str(float16_store), "-o", str(tmp_path / "c.zarr"),
                            "--compact", "pca4-int8", "--calibration-tiles", "4"])
    assert r.exit_code == 0, r.output
    assert "compacted to pca4-int8" in r.output
    r = runner.invoke(app, ["store", "info", str(tmp_path / "c.zarr")])
    assert r.exit_code == 0 and "pca4-int8" in r.output
    r = runner.invoke(app, ["store", "compact", str(float16_store), "-o", str(tmp_path / "d.zarr"),
                            "--compact", "pca"])
    assert r.exit_code != 0 and "pcaK-int8" in r.output


def test_store_compact_refuses_an_existing_destination_before_any_work(float16_store, tmp_path):
    compact_store(float16_store, tmp_path / "c.zarr", "int8")
    before = sorted(p.stat().st_mtime_ns for p in (tmp_path / "c.zarr").rglob("*") if p.is_file())
    with pytest.raises(StoreExistsError, match="--overwrite"):
        compact_store(float16_store, tmp_path / "c.zarr", "pca4-int8")
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "c.zarr").rglob("*") if p.is_file()) == before
    compact_store(float16_store, tmp_path / "c.zarr", "pca4-int8", Calibration(tiles=4), overwrite=True)
    assert open_store(tmp_path / "c.zarr").schema.features.encoding == "pca4-int8"


def test_store_compact_never_writes_over_its_source_or_a_foreign_directory(float16_store, tmp_path):
    before = {p: p.read_bytes() for p in float16_store.rglob("*") if p.is_file()}
    for dst in (float16_store, float16_store / "inside.zarr"):
        with pytest.raises(ConfigError, match="source store"):
            compact_store(float16_store, dst, "int8", overwrite=True)
    assert {p: p.read_bytes() for p in float16_store.rglob("*") if p.is_file()} == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(StoreExistsError, match="not a pathsegdiff store"):
        compact_store(float16_store, mine, "int8", overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep"


def test_a_failed_store_compact_leaves_nothing_and_an_overwritten_store_survives(float16_store, tmp_path,
                                                                                  monkeypatch):
    import pathsegdiff.store.writer as writer

    dst = tmp_path / "c.zarr"
    compact_store(float16_store, dst, "int8")
    kept = {p.relative_to(dst): p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    calls = []
    write = writer.StoreWriter.write

    def fail_second(self, *a, **kw):  # a full disk (or an overflow, Ctrl-C) part-way through
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return write(self, *a, **kw)

    monkeypatch.setattr(writer.StoreWriter, "write", fail_second)
    with pytest.raises(OSError):
        compact_store(float16_store, dst, "pca4-int8", Calibration(tiles=4), overwrite=True)
    assert {p.relative_to(dst): p.read_bytes() for p in dst.rglob("*") if p.is_file()} == kept  # the old one whole
    calls.clear()
    with pytest.raises(OSError):
        compact_store(float16_store, tmp_path / "new.zarr", "int8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.zarr", "f16.zarr"]  # no partial copy, no staging dir


def test_store_compact_of_a_bitround_store_and_of_a_store_without_written_tiles(tmp_path):
    path = tmp_path / "br.zarr"
    with create_store(path, synth.schema(codec="bitround7-zstd"), synth.records()) as w:
        w.write(range(12), low_rank_batch(range(12)))
    out = open_store(compact_store(path, tmp_path / "c.zarr", "int8").destination)
    assert out.schema.features.codec == "none" and len(out.written()) == 12  # int8 codes take a lossless codec
    none = tmp_path / "none.zarr"
    with create_store(none, synth.schema(), synth.records()) as w:
        w.mark_failed(range(12), ["unreadable: test"] * 12)
    with pytest.raises(SchemaError, match="no written tile to fit PCA bases on"):
        compact_store(none, tmp_path / "p.zarr", "pca4")
    assert not (tmp_path / "p.zarr").exists()


def test_verify_names_a_missing_scale_offset_and_a_damaged_basis(tmp_path):
    path = make_store(tmp_path / "s.zarr", "pca4-int8")
    (path / "features" / "t50" / "up1.scale_offset" / "c.3.0.0").unlink()  # tile 3's scale/offset
    rep = verify_store(path)
    assert not rep.ok and rep.damaged_indices == [3]
    assert rep.problems["tile003"][0] == "features/t50/up1.scale_offset: chunk missing"
    chunk = next(p for p in (path / "pca" / "t150" / "up2" / "components").rglob("*") if p.is_file()
                 and p.name != "zarr.json")
    data = bytearray(chunk.read_bytes())
    data[0] ^= 1
    chunk.write_bytes(bytes(data))
    assert any("pca/t150/up2/components" in p for p in verify_store(path).store_problems)
    with pytest.raises(CorruptStoreError, match="pca/t150/up2/components"):
        open_store(path).read_tile(0)


def test_coefficients_that_overflow_float16_are_refused_naming_the_store_and_tiles(tmp_path):
    bases = bases_for("pca4")
    batch = low_rank_batch(range(4))
    x = batch.features[50]["up1"]
    batch.features[50]["up1"] = x / np.abs(x).max() * 60000  # features within float16, coefficients beyond it
    path = tmp_path / "s.zarr"
    with create_store(path, compact_schema("pca4", bases), synth.records(), bases=bases) as w:
        with pytest.raises(SchemaError, match=r"s\.zarr: tiles \['tile000', .*overflow float16.*pca4-int8"):
            w.write(range(4), batch)
        assert not (w.status() != 0).any()
