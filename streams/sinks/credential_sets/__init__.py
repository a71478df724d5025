"""Credential sets per advertiser (``CONVSTREAM_CREDENTIALS_FILE``): the map
(:mod:`.map`), and the sets' sinks with their rotation and the per-destination router
(:mod:`.router`). README, "Several advertisers"."""
