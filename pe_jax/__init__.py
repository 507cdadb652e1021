"""pe_jax: multi-task post embeddings in JAX/Flax."""
