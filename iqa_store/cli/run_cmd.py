from __future__ import annotations

import click

from iqa_store.cli.options import checked_device, emit, format_option, split_key_values, store_option


@click.command()
@click.argument("pipeline_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--device", default="auto", show_default=True, callback=checked_device, help="auto, cpu, cuda or cuda:N.")
@click.option("--workers", type=click.IntRange(0), help="DataLoader decoding processes [default: min(4, cores)].")
@click.option("--root", "roots", multiple=True, metavar="DATASET=DIR",
              help="Where a dataset of the pipeline is (over its root: and its environment variable); repeat.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False),
              help="Folder for the report [default: <store>/reports/<pipeline name>].")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@store_option
@format_option
def run(pipeline_file: str, device: str, workers: int | None, roots: tuple[str, ...], report_dir: str | None,
        quiet: bool, store: str, fmt: str) -> None:
    """Run a pipeline spec end to end (training, extractions, fits), skipping what is cached, then report.

    Datasets, models and stages this machine lacks are skipped, each with a line saying what it
    needs; the report (tables, figures, index.html) covers what ran.

    \b
    Examples:
      iqa-store run pipelines/demo.yaml
      iqa-store run pipelines/onuoha2024.yaml --device cuda --root koniq=~/data/koniq10k
    """
    from iqa_store import api
    from iqa_store.pipeline import Pipeline, run_pipeline
    from iqa_store.report import to_json_records
    from iqa_store.store import FeatureStore
    log = (lambda line: None) if fmt == "json" else click.echo
    pipeline = Pipeline.load(pipeline_file)
    feature_store = FeatureStore(store)
    done = run_pipeline(pipeline, feature_store, device=device, workers=workers,
                        roots=split_key_values(roots, "--root"), progress=not quiet, log=log)
    report = api.report(pipeline_file, store=feature_store, out=report_dir) if done.outcomes else None
    emit(fmt, {"runs": [{"run": str(o.run_dir), "summary": to_json_records(o.aggregate)} for o in done.outcomes],
               "skipped": done.skipped, "report": str(report.html) if report else None},
         lambda: "\n\n".join([*(o.summary for o in done.outcomes), report.markdown, f"report: {report.html}"]
                             if report else ["no fits ran in this pipeline"]))
