"""The `elemta` subcommands, one file each: parse nothing (cli.py did), call the library,
print. Nothing else lives here."""
