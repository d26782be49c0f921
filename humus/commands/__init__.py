"""One module per `humus` subcommand (see humus.cli)."""
