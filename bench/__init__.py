"""parlour's benchmarks: `python -m bench.advance` (the interpreter); more come with later issues."""
