"""Batch jobs: resumable corpus encoding and index building."""
