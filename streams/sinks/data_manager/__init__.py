"""Google Data Manager API (``IngestionService``) for destination ``google_ads``."""
