"""The one CLI, ``reid``. Each package registers its own commands; heavy imports (torch, onnxruntime)
happen inside the commands so ``reid --help`` is instant and serving installs never need torch."""

import typer

from reid.service.commands import register as register_service
from reid.training.cli import register as register_training

app = typer.Typer(help="Person re-identification search: train, evaluate, export, index and serve.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
register_training(app)
register_service(app)

if __name__ == "__main__":
    app()
