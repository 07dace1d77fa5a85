"""End-to-end pipelines (collect -> invert -> train -> evaluate), one module per domain.

Only this package and the CLI know every domain and wire the pipeline together.
"""
