"""Datasets: readers for each source, the leave-one-out split and batching."""
