import typer

app = typer.Typer(help="ui (under construction).", no_args_is_help=True)
