"""What every store location must do: write, reopen, read back bit-exactly, resume, verify.

One base class states the contract; directory, zip and S3 (a real
S3-compatible server on loopback, reached through an fsspec URL) subclass it.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from torch.utils.data import DataLoader, Dataset

from helpers import synth
from pathsegdiff.errors import StoreReadOnlyError, TileNotWrittenError
from pathsegdiff.store import create_store, open_store, open_writer
from pathsegdiff.store import schema as S
from pathsegdiff.store.commands.pack import pack_store
from pathsegdiff.store.commands.verify import verify_store


class _TileSet(Dataset):
    def __init__(self, store, indices):
        self.store, self.indices = store, list(indices)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, k):
        t = self.store.read_tile(self.indices[k])
        return t.features[50]["up1"].astype(np.float32), t.labels


class StoreContract:
    """Subclasses provide ``make(tmp_path, written)`` -> location of a readable store."""

    written = (0, 1, 2, 3, 4, 7)

    def build_dir(self, path, written=None):
        with create_store(path, synth.schema(), synth.records(), {"test": "contract"}) as w:
            idx = list(self.written if written is None else written)
            w.write(idx[:4], synth.tile_batch(idx[:4]))
            if idx[4:]:
                w.write(idx[4:], synth.tile_batch(idx[4:]))
        return path

    def make(self, tmp_path):  # pragma: no cover - abstract
        raise NotImplementedError

    def test_reads_back_bit_exactly(self, tmp_path):
        fs = open_store(self.make(tmp_path))
        assert fs.n_tiles == synth.N_TILES
        assert list(fs.written()) == list(self.written)
        want = synth.tile_batch(self.written)
        for k, i in enumerate(self.written):
            tile = fs.read_tile(i)
            for t in fs.timesteps:
                for b in fs.blocks:
                    expect = want.features[t][b][k].astype(np.float16)
                    assert tile.features[t][b].dtype == np.float16
                    assert tile.features[t][b].tobytes() == expect.tobytes()
            assert np.array_equal(tile.labels, want.labels[k])
            assert np.array_equal(tile.rgb, want.rgb[k])
            assert np.array_equal(tile.ssl, want.ssl[k])
            assert tile.record == synth.records()[i]

    def test_missing_tiles_and_unwritten_read(self, tmp_path):
        fs = open_store(self.make(tmp_path))
        missing = sorted(set(range(synth.N_TILES)) - set(self.written))
        assert list(np.flatnonzero(fs.status() == S.STATUS_TODO)) == missing
        with pytest.raises(TileNotWrittenError, match="tile005"):
            fs.read_tile(5)

    def test_selection_of_blocks_and_timesteps(self, tmp_path):
        fs = open_store(self.make(tmp_path))
        tile = fs.read_tile(2, blocks=["up2"], timesteps=[150], extras=False)
        assert list(tile.features) == [150] and list(tile.features[150]) == ["up2"]
        assert tile.labels is None
        assert fs.read_features(slice(0, 3), 50, "up1").shape == (3, 6, 8, 8)

    def test_xarray_and_dask_views(self, tmp_path):
        fs = open_store(self.make(tmp_path))
        ds = fs.to_xarray(timesteps=[50])
        assert set(ds.data_vars) == {"t50/up1", "t50/up2", "labels", "rgb", "ssl"}
        assert ds["t50/up1"].dims == ("tile", "c_up1", "h_up1", "w_up1")
        assert list(ds["split"].values[:3]) == ["train", "val", "test"]
        got = ds["t50/up2"].isel(tile=3).values
        assert np.array_equal(got, fs.read_tile(3).features[50]["up2"])
        arr = fs.to_dask(S.feature_path(150, "up1"))
        assert arr.chunks[0] == (1,) * synth.N_TILES
        assert np.array_equal(arr[4].compute(), fs.read_tile(4).features[150]["up1"])

    @pytest.mark.parametrize("ctx", ["fork", "spawn"])
    def test_dataloader_workers(self, tmp_path, ctx):
        fs = open_store(self.make(tmp_path))
        fs.read_tile(0)  # parent holds open handles before the workers start
        loader = DataLoader(_TileSet(fs, self.written), batch_size=2, num_workers=2, multiprocessing_context=ctx)
        feats = np.concatenate([f.numpy() for f, _ in loader])
        want = np.stack([fs.read_tile(i).features[50]["up1"] for i in self.written]).astype(np.float32)
        assert np.array_equal(feats, want)

    def test_pickles_as_location(self, tmp_path):
        fs = open_store(self.make(tmp_path))
        fs.read_tile(0)
        blob = pickle.dumps(fs)
        assert len(blob) < 20_000  # location and schema, no arrays
        assert pickle.loads(blob).read_tile(1).record.tile_id == "tile001"

    def test_verifies_clean(self, tmp_path):
        rep = verify_store(self.make(tmp_path))
        assert rep.ok, rep.lines()
        assert rep.n_checked == len(self.written)


class TestDirectory(StoreContract):
    def make(self, tmp_path):
        return self.build_dir(tmp_path / "s.zarr")

    def test_resume_completes(self, tmp_path):
        path = self.make(tmp_path)
        with open_writer(path, expect=synth.spec()) as w:
            todo = w.missing()
            w.write(todo, synth.tile_batch(todo))
        assert len(open_store(path).written()) == synth.N_TILES


class TestZip(StoreContract):
    def make(self, tmp_path):
        return str(pack_store(self.build_dir(tmp_path / "s.zarr"), tmp_path / "s.zip"))

    def test_zip_is_read_only(self, tmp_path):
        with pytest.raises(StoreReadOnlyError, match="read-only"):
            open_writer(self.make(tmp_path))

    def test_zip_is_stored_uncompressed(self, tmp_path):
        import zipfile

        with zipfile.ZipFile(self.make(tmp_path)) as zf:
            assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
            assert not any(n.startswith(S.LOCK_NAME) for n in zf.namelist())


@pytest.mark.usefixtures("s3_env")
class TestS3(StoreContract):
    """Written and read through an ``s3://`` fsspec URL on a loopback server."""

    @pytest.fixture(autouse=True)
    def _bucket(self, s3_env):
        self.bucket = s3_env

    def make(self, tmp_path):
        return self.build_dir(f"s3://{self.bucket}/s.zarr")

    @pytest.mark.parametrize("ctx", ["spawn"])
    def test_dataloader_workers(self, tmp_path, ctx):
        super().test_dataloader_workers(tmp_path, ctx)  # fork after aiohttp sessions is not supported
