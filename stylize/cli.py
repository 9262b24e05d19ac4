import typer

app = typer.Typer(help="stylize (under construction).", no_args_is_help=True)
