from __future__ import annotations

import click

from iqa_store.cli.options import checked_device, emit, format_option, store_option


@click.command()
@click.argument("pipeline_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--device", default="auto", show_default=True, callback=checked_device, help="auto, cpu, cuda or cuda:N.")
@click.option("--workers", type=click.IntRange(0), help="DataLoader decoding processes [default: min(4, cores)].")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@store_option
@format_option
def run(pipeline_file: str, device: str, workers: int | None, quiet: bool, store: str, fmt: str) -> None:
    """Run a pipeline spec end to end (extractions, then fits), skipping what is cached.

    \b
    Examples:
      iqa-store run pipelines/demo.yaml
      iqa-store run pipelines/onuoha2024.yaml --device cuda
    """
    from iqa_store.pipeline import Pipeline, run_pipeline
    from iqa_store.report import to_json_records
    from iqa_store.store import FeatureStore
    log = (lambda line: None) if fmt == "json" else click.echo
    outcomes = run_pipeline(Pipeline.load(pipeline_file), FeatureStore(store), device=device, workers=workers,
                            progress=not quiet, log=log)
    emit(fmt, [{"run": str(o.run_dir), "summary": to_json_records(o.aggregate)} for o in outcomes],
         lambda: "\n\n".join(o.summary for o in outcomes) or "no fits in this pipeline")
