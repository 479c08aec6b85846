"""Long-running jobs built on the engine: labelling files with exactly-once, resumable output."""
