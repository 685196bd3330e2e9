"""``pathsegdiff store ...``: info, verify, pack, copy, ls, compact."""

from __future__ import annotations

from typing import Annotated

import typer

from pathsegdiff.cli.common import Quiet, StoreArg, guarded, store_app


@store_app.command("info")
@guarded
def store_info_cmd(
    store: StoreArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    disk: Annotated[bool, typer.Option("--disk", help="Measure the bytes on disk (lists every object: slow for a big or remote store); without it they are estimated.")] = False,
) -> None:
    """Schema version, tile counts, blocks, timesteps, identity, provenance and size of a store."""
    import json

    from pathsegdiff.store.commands.info import format_info, store_info

    info = store_info(store, disk=disk)
    typer.echo(json.dumps(info, indent=2, default=str) if as_json else format_info(info))


@store_app.command("verify")
@guarded
def store_verify_cmd(
    store: StoreArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    manifest: Annotated[bool, typer.Option("--manifest", help="Also check every object against MANIFEST.sha256.")] = False,
) -> None:
    """Read every written tile: checksums, missing chunks, shapes, NaN/inf. Exit 0 only if all is well."""
    import json

    from tqdm import tqdm

    from pathsegdiff.store.commands.verify import verify_store

    with tqdm(desc="verify", unit="tile-array", disable=as_json, leave=False) as bar:
        report = verify_store(store, progress=bar.update)
    if manifest:
        from pathsegdiff.store.commands.copy import check_manifest

        report.store_problems.extend(check_manifest(store))
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for line in report.lines():
            typer.echo(line, err=True)
        n_bad = len(report.problems)
        verdict = "ok" if report.ok else f"FAILED: {n_bad} damaged tiles, {len(report.store_problems)} store problems"
        typer.echo(f"{report.location}: {report.n_checked} written tiles checked of {report.n_tiles}: {verdict}")
    if not report.ok:
        raise typer.Exit(1)


@store_app.command("pack")
@guarded
def store_pack_cmd(
    store: Annotated[str, typer.Argument(metavar="STORE", help="Store directory to pack.")],
    out: Annotated[str, typer.Argument(metavar="OUT", help="Output .zip (uncompressed ZIP64, opens read-only in place).")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it exists.")] = False,
) -> None:
    """Pack a store into one .zip that pathsegdiff and zarr open without unpacking."""
    from tqdm import tqdm

    from pathsegdiff.store.commands.pack import pack_store

    with tqdm(desc="pack", unit="B", unit_scale=True, leave=False) as bar:
        path = pack_store(store, out, overwrite=overwrite, progress=bar.update)
    typer.echo(f"packed {store} -> {path}")


@store_app.command("copy")
@guarded
def store_copy_cmd(
    src: StoreArg,
    dst: Annotated[str, typer.Argument(metavar="DST", help="Destination: a directory, a .zip, or a URL (s3://...).")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace DST if it exists.")] = False,
) -> None:
    """Copy a store byte for byte (dir, zip, s3), write MANIFEST.sha256, and verify the copy."""
    from tqdm import tqdm

    from pathsegdiff.store.commands.copy import copy_store

    with tqdm(desc="copy", unit="B", unit_scale=True, leave=False) as bar:
        n = copy_store(src, dst, overwrite=overwrite, progress=bar.update)
    typer.echo(f"copied {n / 2**20:,.1f} MiB {src} -> {dst}; manifest and verify ok")


@store_app.command("ls")
@guarded
def store_ls_cmd(
    store: StoreArg,
    status: Annotated[str | None, typer.Option(metavar="STATUS", help="Only tiles with this status: todo, written, failed.")] = None,
    limit: Annotated[int, typer.Option(metavar="LIMIT", help="Print at most this many rows (0: all).")] = 50,
) -> None:
    """List the tile table: index, tile id, slide, x, y, split, status."""
    from pathsegdiff.store.commands.ls import format_rows, list_tiles

    typer.echo(format_rows(list_tiles(store, status, limit)))


@store_app.command("compact")
@guarded
def store_compact_cmd(
    src: StoreArg,
    out: Annotated[str, typer.Option("-o", "--out", metavar="OUT", help="The compact store to write (a directory).")],
    compact: Annotated[str, typer.Option(metavar="COMPACT", help="int8, pcaK or pcaK-int8 (e.g. pca64-int8).")],
    calibration_tiles: Annotated[int, typer.Option(metavar="CALIBRATION_TILES", help="pcaK presets: written tiles, spread over the slides, the bases are fitted on.")] = 32,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it exists.")] = False,
    quiet: Quiet = False,
) -> None:
    """Write a compact copy of a finished, sound float16 store (labels, RGB and the tile table carried over)."""
    from pathsegdiff.store.commands.compact import compact_store
    from pathsegdiff.store.encodings import Calibration

    summary = compact_store(src, out, compact, Calibration(tiles=calibration_tiles), overwrite=overwrite,
                            progress=not quiet, echo=typer.echo)
    typer.echo(summary.line())
