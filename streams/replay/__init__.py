"""``convstream replay``: dead letters back to the input topic.

:mod:`streams.replay.filters` decides, per dead letter and from its headers alone (plus the
destination inside its value), whether it is replayed, skipped by a filter or skipped
because it was already replayed too often, and rewrites its headers for the input topic.
It is pure. :mod:`streams.replay.runner` is the confluent-kafka loop around it: read the
dead-letter topic, produce, wait for the broker's acks, commit. :mod:`streams.replay.report`
prints the progress bar and the summary.
"""
