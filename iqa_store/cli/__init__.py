"""The iqa-store command line: a thin click layer over ``iqa_store.api``.

Commands load lazily (click's documented LazyGroup pattern), so ``iqa-store --help`` and
``iqa-store ls`` never import torch.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

# command name -> "module:attribute"; a new command is one module plus one line here
COMMANDS = {
    "extract": "iqa_store.cli.extract_cmd:extract",
    "fit": "iqa_store.cli.fit_cmd:fit",
    "run": "iqa_store.cli.run_cmd:run",
    "report": "iqa_store.cli.report_cmd:report",
    "results": "iqa_store.cli.results_cmd:results",
    "ls": "iqa_store.cli.store_cmds:ls",
    "models": "iqa_store.cli.models_cmd:models",
    "show": "iqa_store.cli.store_cmds:show",
    "rm": "iqa_store.cli.store_cmds:rm",
    "gc": "iqa_store.cli.store_cmds:gc",
    "export": "iqa_store.cli.store_cmds:export",
    "import": "iqa_store.cli.store_cmds:import_",
    "datasets": "iqa_store.cli.datasets_cmd:datasets",
    "splits": "iqa_store.cli.splits_cmd:splits",
    "distortions": "iqa_store.cli.distortions_cmd:distortions",
    "plot": "iqa_store.cli.plot_cmd:plot",
    "train": "iqa_store.cli.train_cmd:train",
    "annotate": "iqa_store.cli.annotate_cmd:annotate",
    "pretrain": "iqa_store.cli.train_cmd:pretrain",  # the name before `train`; same stages, same options
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, _, attribute = COMMANDS[name].partition(":")
        return getattr(importlib.import_module(module), attribute)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as error:
            if _is_user_error(error):
                click.echo(f"error: {one_line(error)}", err=True)
                sys.exit(2)
            from iqa_store.store.files import StoreWriteError
            if isinstance(error, StoreWriteError):  # the store's disk, not the input: exit 1
                click.echo(f"error: {error}", err=True)
                sys.exit(1)
            raise


# the paths a user gave that the system refused: named by the error's filename
_PATH_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


def _is_user_error(error: Exception) -> bool:
    """Errors caused by input (files, names, settings, options) get one clear line, no traceback.

    The library's own error classes are ValueErrors (ManifestError, RequestError, OptionError,
    PipelineError, DamagedFileError) or say so by name; anything else is a bug and keeps its
    traceback."""
    from iqa_store.datasets.manifest import ManifestError
    from iqa_store.extractors.base import ExtractorError
    from iqa_store.registry import RegistryError
    from iqa_store.store.store import StoreError
    return isinstance(error, (ManifestError, ExtractorError, RegistryError, StoreError, ValueError, *_PATH_ERRORS))


def one_line(error: Exception) -> str:
    """The error's message on one line (a listing after "name one of:" joins with spaces, other
    lines with "; "); a refused path as "what: path"."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.strerror}: {error.filename}" + (f" -> {error.filename2}" if error.filename2 else "")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    for line in lines[1:]:
        text += (" " if text.endswith(":") else "; ") + line
    return text


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="iqa-store")
def cli() -> None:
    """iqa-store: extract image features once into a Zarr store, then fit quality regressors on them.

    \b
    Example:
      iqa-store extract --model brisque --dataset demo
      iqa-store fit --features brisque --regressor ridge
    """


def main() -> None:
    cli(prog_name="iqa-store")
