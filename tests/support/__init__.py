"""Test helpers shared across test modules (real services and artefacts, no mocks)."""
