"""Task kinds: annotation adaption (templates over existing annotations) and multi-turn packing.

Each module registers its kinds with ``@register("task", ...)``; :mod:`.base` holds what they
share (instruction pools, seeded template selection, rendering, sample building).
"""
