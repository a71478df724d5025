"""The published event contract: JSON Schema files, shipped in the package as streams.schemas."""
