"""Releases: the lockfile that rebuilds the same bytes, reading exported data back, the dataset
card and report renderers, and comparing two releases (``vlitc diff``)."""
