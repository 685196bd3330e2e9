"""A summary of a store for ``pathsegdiff store info``: counts, features, size, and a line per slide.

It answers from the metadata (root attributes, the tile table's columns it
shows, the status) and never lists the store's objects: a store of a million
tiles answers in under a second (``bench/store_meta.py``).  The size on disk,
which needs every object, is measured only when asked (``--disk``); otherwise
it is estimated from the uncompressed chunk sizes of the written tiles, and
said so.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pathsegdiff.store import schema as S
from pathsegdiff.store.reader import FeatureStore, open_store
from pathsegdiff.store.tile_table import is_synthetic, runs_of


def bytes_on_disk(fs: FeatureStore) -> int | None:
    """Size of the store's objects; None where the location cannot be listed cheaply."""
    loc = fs.location
    if loc.kind == "dir":
        return sum(p.stat().st_size for p in Path(loc.local_dir).rglob("*") if p.is_file())
    if loc.kind == "zip":
        return os.path.getsize(loc.raw.removeprefix("file://"))
    try:
        import fsspec

        fsys, path = fsspec.core.url_to_fs(loc.raw)
        return int(fsys.du(path))
    except Exception:
        return None


def per_slide(fs: FeatureStore, status: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Tiles, status counts and annotated fraction of each slide, in store order; then the slides the latest run
    left out (``--skip-errors``).  From the table's runs (``schema.RUNS_ATTR``) and the status; a store made
    before the runs reads its slide, patient, split and annotated columns instead."""
    status = fs.status() if status is None else status
    runs = fs.slide_runs()
    if runs is None:
        runs = runs_of(fs.records(), 0)
    n = len(runs)
    start = np.asarray([r[3] for r in runs], np.int64).reshape(n)
    stop = np.asarray([r[4] for r in runs], np.int64).reshape(n)
    counts = {}
    for k in S.STATUS_NAMES:  # tiles of each status in each run, from running totals
        total = np.concatenate([[0], np.cumsum(status == k)])
        counts[k] = total[stop] - total[start]
    slides: dict[str, dict[str, Any]] = {}
    for r, run in enumerate(runs):
        d = slides.setdefault(run[0], {"slide": run[0], "patient": run[1], "splits": set(), "tiles": 0,
                                       **dict.fromkeys(S.STATUS_NAMES.values(), 0), "ann": [0.0, 0]})
        d["splits"].add(run[2])
        d["tiles"] += int(stop[r] - start[r])
        for k, name in S.STATUS_NAMES.items():
            d[name] += int(counts[k][r])
        d["ann"] = [d["ann"][0] + run[5], d["ann"][1] + run[6]]
    out = []
    for d in slides.values():  # store order: by each slide's first tile
        ann_sum, ann_n = d.pop("ann")
        # mean over tiles of the share of each tile's pixels that hold a class; None: no annotations
        out.append({**d, "splits": sorted(d["splits"]), "annotated": float(ann_sum / ann_n) if ann_n else None})
    source = fs.provenance.get("source")
    skipped = fs.meta.get("skipped_slides", source.get("skipped_slides", {}) if isinstance(source, dict) else {})
    out += [{"slide": path, "skipped": reason} for path, reason in skipped.items()]
    return out


def _slide_line(d: dict[str, Any]) -> str:
    if "skipped" in d:
        return f"  {d['slide']}: skipped ({d['skipped']})"
    ann = "no annotations" if d["annotated"] is None else f"annotated {d['annotated']:.1%}"
    split = "/".join(s or "-" for s in d["splits"])
    return (f"  {d['slide']:<24} patient {d['patient'] or '-':<10} split {split:<6} {d['tiles']:>6} tiles: "
            f"{d['written']} written, {d['todo']} todo, {d['failed']} failed; {ann}")


def store_info(where: str | os.PathLike, disk: bool = False) -> dict[str, Any]:
    """What ``store info`` prints.  ``disk``: measure the bytes on disk (lists every object: slow on a big or
    remote store); else they are estimated from the written tiles' uncompressed chunk sizes."""
    fs = open_store(where)
    fs.check_table()  # every table chunk there and checksummed (bytes only): damage is an error, not a summary
    status = fs.status()
    written = int((status == S.STATUS_WRITTEN).sum())
    slides = per_slide(fs, status)
    size = bytes_on_disk(fs) if disk else None
    sch = fs.schema
    float16 = replace(sch, features=replace(sch.features, encoding="float16", basis_sha256="", dtype="float16"))
    return {
        "location": str(fs.location),
        "schema_version": fs.meta["schema_version"],
        "identity": fs.identity,
        "tiles": {
            "total": int(len(status)),
            "written": written,
            **{S.STATUS_NAMES[k]: int((status == k).sum()) for k in S.STATUS_NAMES},
        },
        "blocks": {b.name: list(b.shape) for b in sch.features.blocks},
        "timesteps": list(sch.features.timesteps),
        "classes": list(sch.class_names),
        "ignore_index": sch.ignore_index,
        "tile_size": sch.tile_size,
        "dtype": sch.features.dtype,
        "codec": sch.features.codec,
        "encoding": sch.features.encoding,
        "feature_bytes_per_tile": sch.feature_bytes_per_tile(),
        "float16_feature_bytes_per_tile": float16.feature_bytes_per_tile(),
        "splits": _splits(fs),
        "origins": _origins(fs),
        "bytes_on_disk": size,  # None unless measured (disk=True)
        "bytes_estimated": written * sch.bytes_per_tile(),  # the written tiles' chunks, uncompressed
        "bytes_per_written_tile": (size // written) if (size and written) else None,
        "bytes_per_tile_uncompressed": sch.bytes_per_tile(),
        "slides": slides,
        "identity_fields": fs.meta["identity_fields"],
        "provenance": fs.provenance,
    }


def _splits(fs: FeatureStore) -> dict[str, int]:
    """Tiles per split, from the runs (or the split column of a store without them)."""
    runs = fs.slide_runs()
    if runs is None:
        names, counts = np.unique(fs.table(["split"])["split"].astype(str), return_counts=True)
        return {str(k): int(v) for k, v in zip(names, counts)}
    out: dict[str, int] = {}
    for run in runs:
        out[run[2]] = out.get(run[2], 0) + run[4] - run[3]
    return dict(sorted(out.items()))


def _origins(fs: FeatureStore) -> dict[str, int]:
    """Tiles per origin (real, synthetic); a store made before the column: all real."""
    synthetic = int(is_synthetic(fs.table(["origin"])).sum())
    return {"real": fs.n_tiles - synthetic, "synthetic": synthetic}


def format_info(info: dict[str, Any]) -> str:
    t = info["tiles"]
    mib = lambda n: "?" if n is None else f"{n / 2**20:,.1f} MiB"  # noqa: E731
    lines = [
        f"store      {info['location']}",
        f"layout     v{info['schema_version']}   identity {info['identity']}",
        f"tiles      {t['written']}/{t['total']} written ({t['todo']} todo, {t['failed']} failed)",
        "splits     " + ", ".join(f"{k or '(none)'}: {v}" for k, v in info["splits"].items()),
        *([f"origins    real: {info['origins']['real']}, synthetic: {info['origins']['synthetic']}"]
          if info["origins"]["synthetic"] else []),
        f"timesteps  {', '.join(map(str, info['timesteps']))}",
        "blocks     " + ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in info["blocks"].items()),
        f"storage    {info['dtype']}, encoding {info['encoding']}, codec {info['codec']}, tile {info['tile_size']} px",
        f"features   {info['feature_bytes_per_tile'] / 2**20:,.3f} MiB per tile uncompressed"
        + (f" ({info['float16_feature_bytes_per_tile'] / info['feature_bytes_per_tile']:.1f}x fewer bytes than float16)"
           if info["encoding"] != "float16" else ""),
        f"classes    {', '.join(info['classes']) or '(no labels)'} (ignore {info['ignore_index']})",
        (f"on disk    {mib(info['bytes_on_disk'])}; per written tile {mib(info['bytes_per_written_tile'])}"
         f" (uncompressed {mib(info['bytes_per_tile_uncompressed'])})" if info["bytes_on_disk"] is not None else
         f"on disk    {mib(info['bytes_estimated'])} estimated (written tiles x uncompressed chunk sizes; "
         f"--disk measures); per tile uncompressed {mib(info['bytes_per_tile_uncompressed'])}"),
        "provenance " + ", ".join(f"{k}={v}" for k, v in info["provenance"].items() if not isinstance(v, (dict, list))),
        f"slides     {sum('skipped' not in d for d in info['slides'])}"
        + (f" ({n} skipped)" if (n := sum('skipped' in d for d in info['slides'])) else ""),
        *map(_slide_line, info["slides"]),
    ]
    return "\n".join(lines)
