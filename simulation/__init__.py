"""The simulation: pure, synchronous domain rules (no asyncio, no aiohttp), each in one module.

- models: the data shapes of the HTTP contract; errors: the named errors.
- catalogue: the node types; validity: what a valid graph is; graph: an editor's edits;
  templates, gallery, demo: reusable and sample graphs; plan: a graph compiled to run.
- states: the run and node transition tables; progress: a run's progress; recovery: runs
  interrupted by a restart; messages: user-facing messages stated in more than one place.
- timing, rng, outputs, script: how long a node takes, its seeded randomness, its mock output,
  and a test's scripted outcome.
- inspection, filenames, image_decoding, images, parsing: uploaded files and what file nodes
  do with them.
- timefmt: timestamps as the contract writes them.
"""

__all__: list[str] = []
