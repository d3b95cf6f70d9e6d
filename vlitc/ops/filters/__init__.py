"""Quality-control filters: measure each sample (expensive, cached), then keep or drop (cheap).

Modules: :mod:`.text` (word and turn bands, structure, leaked template phrases, repetition,
truncation), :mod:`.hallucination` (annotation-grounded, model-free), :mod:`.clip`
(``clip_match``), :mod:`.judge` (LLM judge), :mod:`.dedup` (exact, MinHash, semantic) and
:mod:`.cap` (``per_image_cap``). Every drop reason says what was measured and which limit it
crossed.
"""
