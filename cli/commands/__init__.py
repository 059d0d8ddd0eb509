"""The subcommands of ``caractrl``, one module per job."""
