"""The public API: everything in ``vlitc.__all__`` exists, and the list stays sorted."""

import vlitc


def test_all_is_sorted_and_complete():
    assert vlitc.__all__ == sorted(vlitc.__all__)
    for name in vlitc.__all__:
        assert hasattr(vlitc, name), name
