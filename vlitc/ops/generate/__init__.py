"""Self-instruct ops: LLM endpoints (``generator`` family: openai, anthropic, mock) and the tasks
that call them (``generate``: context + prompt pack -> parsed conversations; ``rewrite``: an LLM
fixes and tightens another task's samples)."""
