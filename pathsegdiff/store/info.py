"""A summary of a store for ``pathsegdiff store info``: counts, features, size, and a line per slide."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pathsegdiff.store import schema as S
from pathsegdiff.store.cohort_columns import full_table
from pathsegdiff.store.reader import FeatureStore, open_store


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


def per_slide(fs: FeatureStore) -> list[dict[str, Any]]:
    """Tiles, status counts and annotated fraction of each slide, in store order; then the slides the latest run
    left out (``--skip-errors``)."""
    t = full_table(fs)
    slides = np.asarray(t["slide_id"]).astype(str)
    out = []
    for sid in dict.fromkeys(slides):
        rows = slides == sid
        st = t["status"][rows]
        ann = t["annotated"][rows]
        out.append({
            "slide": sid, "patient": str(t["patient"][rows][0]),
            "splits": sorted(set(np.asarray(t["split"][rows]).astype(str))), "tiles": int(rows.sum()),
            **{S.STATUS_NAMES[k]: int((st == k).sum()) for k in S.STATUS_NAMES},
            # mean over tiles of the share of each tile's pixels that hold a class; None: no annotations
            "annotated": None if np.isnan(ann).all() else float(np.nanmean(ann)),
        })
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


def store_info(where: str | os.PathLike) -> dict[str, Any]:
    fs = open_store(where)
    status = fs.status()
    written = int((status == S.STATUS_WRITTEN).sum())
    size = bytes_on_disk(fs)
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
        "splits": {str(k): int(v) for k, v in zip(*np.unique(fs.table()["split"].astype(str), return_counts=True))},
        "bytes_on_disk": size,
        "bytes_per_written_tile": (size // written) if (size and written) else None,
        "bytes_per_tile_uncompressed": sch.bytes_per_tile(),
        "slides": per_slide(fs),
        "identity_fields": fs.meta["identity_fields"],
        "provenance": fs.provenance,
    }


def format_info(info: dict[str, Any]) -> str:
    t = info["tiles"]
    mib = lambda n: "?" if n is None else f"{n / 2**20:,.1f} MiB"  # noqa: E731
    lines = [
        f"store      {info['location']}",
        f"layout     v{info['schema_version']}   identity {info['identity']}",
        f"tiles      {t['written']}/{t['total']} written ({t['todo']} todo, {t['failed']} failed)",
        "splits     " + ", ".join(f"{k or '(none)'}: {v}" for k, v in info["splits"].items()),
        f"timesteps  {', '.join(map(str, info['timesteps']))}",
        "blocks     " + ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in info["blocks"].items()),
        f"storage    {info['dtype']}, encoding {info['encoding']}, codec {info['codec']}, tile {info['tile_size']} px",
        f"features   {info['feature_bytes_per_tile'] / 2**20:,.3f} MiB per tile uncompressed"
        + (f" ({info['float16_feature_bytes_per_tile'] / info['feature_bytes_per_tile']:.1f}x fewer bytes than float16)"
           if info["encoding"] != "float16" else ""),
        f"classes    {', '.join(info['classes']) or '(no labels)'} (ignore {info['ignore_index']})",
        f"on disk    {mib(info['bytes_on_disk'])}; per written tile {mib(info['bytes_per_written_tile'])}"
        f" (uncompressed {mib(info['bytes_per_tile_uncompressed'])})",
        "provenance " + ", ".join(f"{k}={v}" for k, v in info["provenance"].items() if not isinstance(v, (dict, list))),
        f"slides     {sum('skipped' not in d for d in info['slides'])}"
        + (f" ({n} skipped)" if (n := sum('skipped' in d for d in info['slides'])) else ""),
        *map(_slide_line, info["slides"]),
    ]
    return "\n".join(lines)
