"""The reaper deployable."""
