"""Quality measures shared by filters and the release report: embeddings and indicators."""
