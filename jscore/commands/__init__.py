"""Sub-commands of the `jscore` command line, one module each (see `jscore.cli`)."""
