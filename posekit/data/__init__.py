"""Datasets (one file per format), synthetic generators, image I/O and geometric transforms."""
