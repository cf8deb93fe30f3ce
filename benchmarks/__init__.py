"""Speed benchmarks of descent against its peers; `python -m benchmarks.run` writes RESULTS.md."""
