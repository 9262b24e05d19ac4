import typer

app = typer.Typer(help="classify (under construction).", no_args_is_help=True)
