"""A teammate without pathsegdiff reads the store with plain zarr, as the README documents."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import synth
from pathsegdiff.store import create_store

READER = r"""
import json, sys
import zarr
root = zarr.open_group(sys.argv[1], mode="r")
meta = root.attrs["pathsegdiff"]
out = {"modules": sorted(m for m in sys.modules if m.startswith("pathsegdiff")),
       "schema_version": meta["schema_version"], "identity": meta["identity"],
       "timesteps": meta["schema"]["features"]["timesteps"],
       "blocks": [b["name"] for b in meta["schema"]["features"]["blocks"]], "arrays": {}}
names = ["tiles/" + c for c in ("tile_id", "slide_id", "x", "y", "mpp", "split", "status")]
names += ["features/t%d/%s" % (t, b) for t in out["timesteps"] for b in out["blocks"]]
names += ["labels", "rgb", "ssl"]
for name in names:
    a = root[name]
    out["arrays"][name] = {"shape": list(a.shape), "chunks": list(a.chunks), "dtype": str(a.dtype),
                           "dims": list(a.metadata.dimension_names or [])}
out["status"] = root["tiles/status"][:].tolist()
out["tile3_up1_sum"] = float(root["features/t50/up1"][3].astype("float64").sum())
out["tile_id_3"] = str(root["tiles/tile_id"][3])
print(json.dumps(out))
"""


def test_plain_zarr_reads_documented_layout(tmp_path):
    path = tmp_path / "s.zarr"
    with create_store(path, synth.schema(), synth.records()) as w:
        w.write(range(6), synth.tile_batch(range(6)))
    r = subprocess.run([sys.executable, "-c", READER, str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["modules"] == []
    assert got["schema_version"] == 1 and got["identity"] == synth.spec().identity()
    arrays = got["arrays"]
    n, s = synth.N_TILES, synth.TILE
    assert arrays["features/t50/up1"] == {"shape": [n, 6, 8, 8], "chunks": [1, 6, 8, 8], "dtype": "float16",
                                          "dims": ["tile", "c_up1", "h_up1", "w_up1"]}
    assert arrays["features/t150/up2"]["shape"] == [n, 4, 16, 16]
    assert arrays["labels"] == {"shape": [n, s, s], "chunks": [1, s, s], "dtype": "uint8", "dims": ["tile", "row", "col"]}
    assert arrays["rgb"]["shape"] == [n, 3, s, s] and arrays["rgb"]["dtype"] == "uint8"
    assert arrays["ssl"]["shape"] == [n, 5] and arrays["ssl"]["dtype"] == "float32"
    assert arrays["tiles/status"]["dtype"] == "uint8" and arrays["tiles/x"]["dtype"] == "int64"
    assert got["status"] == [1] * 6 + [0] * 6
    want = synth.tile_batch([3]).features[50]["up1"][0].astype("float16").astype("float64").sum()
    assert got["tile3_up1_sum"] == float(want)
    assert got["tile_id_3"] == "tile003"
