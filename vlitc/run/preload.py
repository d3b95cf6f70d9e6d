"""What a local pool's forkserver imports once, before it forks a worker (:class:`vlitc.run.
engine.LocalEngine`): the shard functions, every op (the first chunk a worker runs would
otherwise import them: a third of a second a worker, on each step's critical path) and the
libraries the chunks of every build use. A worker forked from the server starts with them.

Not numpy: its BLAS sizes its thread pool when it is imported, and a worker imports it after it
has set its share of the machine's threads (:func:`vlitc.run.engine.limit_threads`)."""

import imagesize  # noqa: F401
import orjson  # noqa: F401
import PIL.Image  # noqa: F401
import zstandard  # noqa: F401

import vlitc.run.shards  # noqa: F401
from vlitc.ops import registry

registry.load_all()
