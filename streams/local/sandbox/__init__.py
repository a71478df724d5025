"""Local stand-ins for the Google Ads API (gRPC over TLS, with an OAuth token endpoint) and
the Yandex Metrica API (HTTP): what the tests and `convstream demo` upload to.

They live in the package, not under tests/, because the demo runs them from an installed
convstream; nothing here is imported by the worker itself.
"""
