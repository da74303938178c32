"""``iqa-store datasets list`` and ``iqa-store datasets verify``."""

from __future__ import annotations

import sys

import click

from iqa_store.cli.options import dataset_options, emit, format_option


@click.group()
def datasets() -> None:
    """The datasets iqa-store reads in their official layouts.

    \b
    Examples:
      iqa-store datasets list
      iqa-store datasets verify kadid10k --root ~/data/kadid10k
    """


@datasets.command("list")
@format_option
def list_(fmt: str) -> None:
    """Each dataset: expected layout, published image count, MOS scale, citation."""
    from iqa_store.datasets.verify import describe_datasets
    rows = describe_datasets()

    def text() -> str:
        blocks = []
        for row in rows:
            count = "" if row["images"] is None else f", {row['images']} images"
            refs = "" if row["references"] is None else f" from {row['references']} references"
            lines = [f"{row['name']}: {row['help']}{count}{refs}"]
            root = "--root DIR" + (f" or ${row['env_var']}" if row["env_var"] else "")
            lines += [f"  {label}: {row[key]}" for label, key in (("scale", "scale"), ("official split", "splits"))
                      if row[key]]
            lines += [f"  root: {root}", f"  layout: {row['layout']}"]
            lines += [f"  options (-o KEY=VALUE): {', '.join(row['options'])}"] if row["options"] else []
            lines += [f"  cite: {row['citation']}"] if row["citation"] else []
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)
    emit(fmt, rows, text)


@dataset_options
@click.command()
@click.argument("name")
@click.option("--workers", type=click.IntRange(1), help="Threads decoding images [default: all cores].")
@format_option
def verify(name: str, root: str | None, dataset_options: dict[str, str], workers: int | None, fmt: str) -> None:
    """Check a dataset tree: every listed file present and decodable, counts as published, MOS range.

    Exits 1 when anything is wrong, after listing every problem.

    \b
    Examples:
      iqa-store datasets verify clive --root ~/data/ChallengeDB_release
      iqa-store datasets verify live -o realigned=true --format json
    """
    from iqa_store.datasets.verify import verify_dataset
    report = verify_dataset(name, root, workers=workers, **dataset_options)
    emit(fmt, report.to_dict(), report.text)
    if not report.ok:
        sys.exit(1)


datasets.add_command(verify)
