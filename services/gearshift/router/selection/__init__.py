"""Which option (a data source, a described model route) a question fits, by metadata."""
