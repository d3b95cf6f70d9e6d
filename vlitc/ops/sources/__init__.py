"""Source loaders: each reads a dataset in its published format and yields image records.

One module per dataset family (``coco``, ``vqa``, ``textvqa``, ``visual_genome``, ``refcoco``,
``llava``, ``text``, ``generic``) plus ``join``, which merges the records of several sources that
describe the same images into one record per image. Shared machinery is in ``_common``.
"""
