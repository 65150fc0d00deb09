"""The `gearshift` command line."""
