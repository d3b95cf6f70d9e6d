"""What can run: op base classes, the registry, and one module (or package) per family.

Every module under this package is imported by :func:`vlitc.ops.registry.load_all`, so an op is
added by adding its module; nothing else needs to change.
"""
