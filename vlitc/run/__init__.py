"""How it runs and what was cached: fingerprints, the cache store, the executor, status."""
