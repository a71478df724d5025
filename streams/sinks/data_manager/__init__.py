"""The Data Manager API sink (``IngestionService.IngestEvents``) for destination google_ads.

Modules, one job each: :mod:`.client` (credentials and the async client), :mod:`.events`
(event mapping, local checks, request packing), :mod:`.attribution` (index-exact outcomes
when Google refuses a whole request), :mod:`.errors` (the error boundary), :mod:`.sink`
(the :class:`~streams.sinks.Sink`).
"""
