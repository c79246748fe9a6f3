"""Analysis of finished runs: fits, theory predictions, emergence. Reads results; never trains."""
