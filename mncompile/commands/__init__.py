"""One module per subcommand; each has NAME, HELP, add_arguments(parser) and run(args) -> int."""
