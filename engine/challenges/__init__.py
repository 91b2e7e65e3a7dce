"""Challenge TOMLs bundled with the engine (``--challenge demo``)."""
