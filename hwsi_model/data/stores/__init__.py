"""Per-slide stores (Zarr v3, CSV), one module each: schema, writer, reader and validator."""
