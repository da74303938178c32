"""``iqa-store splits show``: the train/val/test splits stored for reuse by every fit."""

from __future__ import annotations

import click

from iqa_store.cli.options import emit, format_option, store_option, table


@click.group()
def splits() -> None:
    """Stored splits: made once per dataset and protocol settings, reused by every fit.

    \b
    Examples:
      iqa-store splits show
      iqa-store splits show kadid10k --protocol random-70-10-20 --format json
    """


@splits.command()
@click.argument("dataset", required=False)
@click.option("--protocol", "-p", help="Only this protocol, e.g. random-80-20.")
@click.option("--key", help="One split set (a key prefix): list every split's images.")
@store_option
@format_option
def show(dataset: str | None, protocol: str | None, key: str | None, store: str, fmt: str) -> None:
    """List the stored split sets (of DATASET), or with --key the images of each split.

    \b
    Examples:
      iqa-store splits show
      iqa-store splits show cid2013 --protocol scenes-4-2
      iqa-store splits show cid2013 --key 3fa2 --format json
    """
    from iqa_store.splits import list_stored_splits
    from iqa_store.store import FeatureStore
    stored = list_stored_splits(FeatureStore(store).splits_dir, dataset, protocol)
    if key is None:
        rows = [s.summary() for s in stored]
        emit(fmt, rows, lambda: table([{**r, **{k: _sizes(r[k]) for k in ("n_train", "n_val", "n_test")}}
                                       for r in rows], ["dataset", "protocol", "key", "n_splits", "seed",
                                                        "grouped_by", "n_train", "n_val", "n_test"]))
        return
    matches = [s for s in stored if s.key.startswith(key)]
    if len(matches) != 1:
        raise click.BadParameter(f"{len(matches)} stored split sets match key {key!r}; "
                                 "`iqa-store splits show` lists them", param_hint="--key")
    detail = matches[0].detail()
    emit(fmt, detail, lambda: "\n".join(
        [f"{k}: {v}" for k, v in detail.items() if k != "splits"]
        + [f"split {s['index']}: train {len(s['train'])}, val {len(s['val'])}, test {len(s['test'])}; test: "
           f"{', '.join(map(str, s['test'][:8]))}{' ...' if len(s['test']) > 8 else ''}" for s in detail["splits"]]))


def _sizes(values: list[int]) -> str:
    return "/".join(map(str, values))
