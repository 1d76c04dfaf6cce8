"""``revisit visitors show|crops|merge|split|merges`` and ``revisit consolidate``.

Merges are recorded in the store's alias table, never by rewriting sightings, so reports
reflect a merge at once and ``split`` returns them exactly to their numbers before it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from revisit.cli.context import Tenant, open_data_store, require_tenant, state
from revisit.records import iso_utc

visitors_app = typer.Typer(help="Inspect visitors; merge two into one or undo a merge.",
                           no_args_is_help=True)




@visitors_app.command("show")
def show(
    ctx: typer.Context,
    visitor: Annotated[str, typer.Argument(help="Visitor id, e.g. V-0001A7 (a merged id works).")],
    tenant: Tenant = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Sightings per store, first/last seen, merged ids and exemplar quality of a visitor."""
    store = open_data_store(ctx)
    try:
        d = store.visitor_detail(tenant, visitor)
    finally:
        store.close()
    if d is None:
        typer.echo(f"error: no visitor {visitor} in tenant {tenant}", err=True)
        raise typer.Exit(2)
    info = {
        "visitor": d.visitor_id,
        "asked_as": visitor if visitor != d.visitor_id else None,
        "merged_ids": list(d.aliases),
        "sightings": d.sightings,
        "stores": d.locations,
        "first_seen": iso_utc(d.first_seen) or None,
        "last_seen": iso_utc(d.last_seen) or None,
        "exemplars": d.exemplars,
        "exemplar_quality_mean": (
            round(d.exemplar_quality_mean, 3) if d.exemplar_quality_mean is not None else None
        ),
        "exemplar_quality_max": (
            round(d.exemplar_quality_max, 3) if d.exemplar_quality_max is not None else None
        ),
    }
    if as_json:
        typer.echo(json.dumps(info, indent=1))
        return
    typer.echo(f"visitor     {d.visitor_id}" + (f"  (asked as {visitor})" if info["asked_as"] else ""))
    if d.aliases:
        typer.echo(f"merged ids  {', '.join(d.aliases)}")
    typer.echo(f"sightings   {d.sightings}")
    for label, when in (("first seen ", d.first_seen), ("last seen  ", d.last_seen)):
        typer.echo(f"{label} {iso_utc(when) if when else '-'}")
    quality = (f" (quality mean {info['exemplar_quality_mean']}, max "
               f"{info['exemplar_quality_max']})" if d.exemplars else "")
    typer.echo(f"exemplars   {d.exemplars}{quality}")
    typer.echo("stores      " + (", ".join(f"{k}: {v}" for k, v in d.locations.items()) or "-"))


@visitors_app.command("crops")
def crops(
    ctx: typer.Context,
    visitor: Annotated[str, typer.Argument(help="Visitor id (a merged id works).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the JPEGs to (made if "
                                      "missing).", file_okay=False)],
    tenant: Tenant = "default",
) -> None:
    """Write the face crops kept of a visitor (only with privacy.keep_crops) as
    <time>_<face_image_id>.jpg files, to check who a visitor id is (crop files an earlier
    version wrote: <day>_<face_image_id>.jpg)."""
    from revisit.store.crops import crop_files

    store = open_data_store(ctx)
    try:
        if store.visitor_detail(tenant, visitor) is None:
            typer.echo(f"error: no visitor {visitor} in tenant {tenant}", err=True)
            raise typer.Exit(2)
        rows = store.visitor_crops(tenant, visitor)
        kept = [(f"{ts:%Y%m%dT%H%M%S}_{face}", jpeg) for face, ts, jpeg in rows]
        faces = store.visitor_face_ids(tenant, visitor) - {face for face, _, _ in rows}
        kept += [(f"{p.parent.name.replace('-', '')}_{p.stem}", p.read_bytes())
                 for p in crop_files(state(ctx).settings().crops_dir, tenant, faces)]
    finally:
        store.close()
    if not kept:
        typer.echo(f"no crops kept of {visitor} (crops are kept only with "
                   "privacy.keep_crops / --keep-crops)")
        return
    try:  # faces: readable by this user only
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, jpeg in kept:
            path = out / f"{name}.jpg"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(jpeg)
    except OSError as exc:
        typer.echo(f"error: cannot write to {out}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{len(kept)} crop(s) of {visitor} written to {out}")


@visitors_app.command("merge")
def merge(
    ctx: typer.Context,
    keep: Annotated[str, typer.Argument(help="Visitor id that stays.")],
    absorb: Annotated[str, typer.Argument(help="Visitor id that from now on reads as KEEP.")],
    tenant: Tenant = "default",
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the merge log).")] = "manual",
) -> None:
    """Merge ABSORB into KEEP (one person seen as two); reversible with `visitors split`."""
    store = open_data_store(ctx, "POST /v1/visitors/{keep}/merge")
    try:
        rec = store.merge_visitors(tenant, keep, absorb, reason=reason)
    except (KeyError, ValueError) as exc:  # an unknown visitor is an input error (2)
        typer.echo(f"error: {exc.args[0] if exc.args else exc}", err=True)
        raise typer.Exit(2 if isinstance(exc, KeyError) else 1) from None
    finally:
        store.close()
    typer.echo(f"merged {rec.absorb} into {rec.keep} (merge {rec.merge_id}); "
               f"undo with: revisit visitors split {rec.absorb}")


@visitors_app.command("split")
def split(
    ctx: typer.Context,
    merged: Annotated[str, typer.Argument(help="A visitor id that was merged into another.")],
    tenant: Tenant = "default",
) -> None:
    """Undo the merge that absorbed MERGED: reports count it separately again."""
    store = open_data_store(ctx, "POST /v1/visitors/{id}/split")
    try:
        rec = store.split_visitor(tenant, merged)
    except (KeyError, ValueError) as exc:  # an unknown visitor is an input error (2)
        typer.echo(f"error: {exc.args[0] if exc.args else exc}", err=True)
        raise typer.Exit(2 if isinstance(exc, KeyError) else 1) from None
    finally:
        store.close()
    typer.echo(f"split {rec.absorb} from {rec.keep} (undid merge {rec.merge_id})")


@visitors_app.command("merges")
def merges(
    ctx: typer.Context,
    tenant: Tenant = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The merge log: every merge, why, and whether it was split again."""
    store = open_data_store(ctx)
    try:
        require_tenant(store, tenant)
        log = store.merges(tenant)
    finally:
        store.close()
    rows = [
        {"merge_id": m.merge_id, "keep": m.keep, "absorb": m.absorb,
         "merged_at": m.merged_at.isoformat(), "reason": m.reason,
         "split_at": m.split_at.isoformat() if m.split_at else None}
        for m in log
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    for r in rows:
        state_ = f"split {r['split_at']}" if r["split_at"] else "active"
        typer.echo(f"{r['merge_id']:>5}  {r['absorb']} -> {r['keep']}  {r['merged_at']}  "
                   f"{state_}  {r['reason']}")


def register(app: typer.Typer) -> None:
    app.add_typer(visitors_app, name="visitors")

    @app.command("consolidate")
    def consolidate_cmd(
        ctx: typer.Context,
        tenant: Tenant = "default",
        threshold: Annotated[
            float | None,
            typer.Option("--threshold", min=0.0, max=1.0,
                         help="Average similarity to merge at, wherever the two were seen "
                         "(default: identity.merge_threshold and, for visitors sharing a store, "
                         "identity.merge_threshold_same_store)."),
        ] = None,
        same_store: Annotated[
            float | None,
            typer.Option("--same-store-threshold", min=0.0, max=1.0,
                         help="Average similarity to merge two visitors who share a store at."),
        ] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list proposed merges.")] = False,
    ) -> None:
        """Merge visitors who turn out to be one person (also runs at the end of ingest)."""
        from revisit.identity.consolidate import consolidate

        settings = state(ctx).settings()
        store = open_data_store(ctx)
        try:
            require_tenant(store, tenant)
            out = consolidate(settings, store, None, tenant, threshold=threshold, same_store=same_store,
                              dry_run=dry_run)
        finally:
            store.close()
        if dry_run:
            for p in out:
                typer.echo(f"would merge {p.absorb} into {p.keep} "  # type: ignore[union-attr]
                           f"(average similarity {p.similarity:.3f})")  # type: ignore[union-attr]
            typer.echo(f"{len(out)} merges proposed")
        else:
            for m in out:
                typer.echo(f"merged {m.absorb} into {m.keep}: {m.reason}")  # type: ignore[union-attr]
            typer.echo(f"{len(out)} merges")
