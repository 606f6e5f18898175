"""The result: its versioned schema, the builder from measured arrays, the JSON codec, the verdict
(patterns, bands); and a sweep's summary over many results (sweep)."""
