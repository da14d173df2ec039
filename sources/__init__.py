"""The data package: raw datasets in, typed Arrow tables out.

``readers`` (every raw format: MovieLens, Amazon/S3-Rec, Last.fm, plain tables), ``sequences``
(dedup, k-core, chronological split, the cold-start hold-out), ``fetch`` (public downloads,
whole or nothing), ``synth*`` (the seeded synthetic generator and its config) and ``errors``
(the named errors users see). It knows nothing of stages, keys or models above it: the ingest
stage (``pipeline.stages.ingest``) calls it.
"""
