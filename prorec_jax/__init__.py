"""PRORec in JAX/Flax: progressive collaborative + semantic fusion for generative recommendation."""
