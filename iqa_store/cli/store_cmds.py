"""Commands that look after the store: ls, show, rm, gc, export, import."""

from __future__ import annotations

from pathlib import Path

import click

from iqa_store.cli.options import dataset_options, emit, format_option, store_option, table


@click.command()
@click.option("--dataset", "-d", help="Only this dataset.")
@store_option
@format_option
def ls(dataset: str | None, store: str, fmt: str) -> None:
    """List feature sets and encoders in the store.

    \b
    Example:
      iqa-store ls --dataset demo --format json
    """
    from iqa_store.store import FeatureStore, list_encoders
    st = FeatureStore(store)
    sets = [{"name": fs.name, "rows": fs.n_rows, "dim": fs.dim, "state": "complete" if fs.is_complete else
             f"partial {len(fs.done_chunks())}/{fs.n_chunks} chunks", "failed": fs.counts()["failed"],
             "scope": _scope(fs.scope), "created": fs.attrs.get("created", "")} for fs in st.feature_sets(dataset)]
    encoders = [{"id": r.id, "reader": r.config.get("reader", r.config.get("stage")), "scope": _scope(r.scope),
                 "created": r.created, "config": r.config} for r in list_encoders(st)]
    emit(fmt, {"store": str(st.root), "feature_sets": sets, "encoders": encoders},
         lambda: f"feature sets in {st.root}:\n" + table(sets, ["name", "rows", "dim", "state", "failed", "scope",
                                                                "created"])
         + ("\n\nencoders:\n" + table(encoders, ["id", "reader", "scope", "created"]) if encoders else ""))


def _scope(scope: object) -> str:
    """A scope in one short cell: the split a learned feature was trained on; "-" for unscoped ones."""
    return "-" if scope is None else f"{scope.dataset} {scope.protocol} split {scope.split}"


@click.command()
@click.argument("name")
@store_option
@format_option
def show(name: str, store: str, fmt: str) -> None:
    """Show one feature set: attributes, fingerprint inputs, progress, failures.

    \b
    Example:
      iqa-store show demo/brisque/3fa2c1d0
    """
    from iqa_store.store import FeatureStore
    fs = FeatureStore(store).get(name)
    info = fs.info()
    info["failures"] = {fs.ids[row]: reason for row, reason in sorted(fs.failures().items())}

    def text() -> str:
        attrs = info.pop("attributes")
        lines = [f"{k}: {v}" for k, v in info.items() if k != "failures"]
        lines += [f"fingerprint inputs: {attrs['fingerprint_inputs']}", f"manifest hash: {attrs['manifest_hash']}",
                  f"dataset root: {attrs['dataset_root']}", f"package versions: {attrs['package_versions']}"]
        lines += [f"failed {image_id}: {reason}" for image_id, reason in info["failures"].items()]
        return "\n".join(lines)
    emit(fmt, info, text)


@click.command()
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@store_option
def rm(name: str, yes: bool, store: str) -> None:
    """Remove one feature set (refused while an extraction writes it).

    \b
    Example:
      iqa-store rm demo/brisque/3fa2c1d0 --yes
    """
    from iqa_store.store import FeatureStore
    st = FeatureStore(store)
    fs = st.get(name)
    if not yes:
        click.confirm(f"remove {fs.name} ({fs.n_rows} rows)?", abort=True)
    st.remove(fs.name)
    click.echo(f"removed {fs.name}")


@click.command()
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@store_option
@format_option
def gc(dry_run: bool, store: str, fmt: str) -> None:
    """Remove partial feature sets no process is writing, and crash leftovers.

    \b
    Example:
      iqa-store gc --dry-run
    """
    from iqa_store.store import FeatureStore
    items = FeatureStore(store).gc(dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    emit(fmt, [item.__dict__ for item in items],
         lambda: "\n".join(f"{verb} {i.path}: {i.reason}" for i in items) or "nothing to collect")


@click.command()
@click.argument("name")
@click.argument("out", type=click.Path(dir_okay=False))
@store_option
def export(name: str, out: str, store: str) -> None:
    """Export a feature set to HDF5 (OUT.h5) or to OUT.npy + OUT.ids.txt.

    \b
    Examples:
      iqa-store export koniq/clip-vitb16/3fa2 clip_koniq.h5
      iqa-store export koniq/clip-vitb16/3fa2 clip_koniq.npy
    """
    from iqa_store.store import FeatureStore
    from iqa_store.store.transfer import export_feature_set
    if not Path(out).absolute().parent.is_dir():
        raise click.BadParameter(f"folder {Path(out).parent} does not exist; create it first", param_hint="OUT")
    for path in export_feature_set(FeatureStore(store).get(name), Path(out)):
        click.echo(f"wrote {path}")


@dataset_options
@click.command(name="import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--dataset", "-d", required=True,
              help="Dataset the rows belong to: read with --root and -o, or its labels already in the store.")
@click.option("--name", "-n", required=True, help="Feature name to register, e.g. metaiqa.")
@click.option("--ids", "ids_file", type=click.Path(exists=True, dir_okay=False), help="Ids file for .npy [default: FILE.ids.txt].")
@store_option
def import_(file: str, dataset: str, name: str, ids_file: str | None, root: str | None,
            dataset_options: dict[str, str], store: str) -> None:
    """Import features computed elsewhere (HDF5 with 'features' and 'ids', or .npy + ids file).

    Rows are matched to the dataset's images by id; unknown ids are an error. The dataset is
    read from --root (with its -o options) when given, else from the labels an earlier
    extraction stored.

    \b
    Examples:
      iqa-store import metaiqa_koniq.h5 --dataset koniq --name metaiqa
      iqa-store import mine.h5 -d csv --root ~/photos -o labels=mos.csv --name mine
    """
    from iqa_store.datasets import load_manifest
    from iqa_store.store import FeatureStore
    from iqa_store.store.transfer import import_feature_set
    st = FeatureStore(store)
    from_tree = root is not None or dataset_options
    manifest = load_manifest(dataset, root, **dataset_options) if from_tree else st.load_manifest(dataset)
    fs = import_feature_set(st, Path(file), manifest, name, Path(ids_file) if ids_file else None)
    click.echo(f"imported {fs.name}: {fs.counts()}")
