"""Support code shared by the tests (never imported by production code)."""
