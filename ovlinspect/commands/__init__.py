"""Command implementations for the typer CLI: parse options, call the library, render, exit."""
