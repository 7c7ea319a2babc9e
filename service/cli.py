"""Service commands: serve, index, query, reindex (filled in by the service issue)."""

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def serve() -> None:
        """Start the search service."""
        typer.echo("not implemented yet", err=True)
        raise typer.Exit(2)
