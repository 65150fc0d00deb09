"""Developer tooling: code generation and checks that are not needed at run time."""
