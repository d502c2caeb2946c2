"""Actions mode: `gatekeeper action` inside a GitHub Actions job reads the event, validates
and reports through the step's outputs, summary and annotations.

An edge: may import the engine and github.
"""
