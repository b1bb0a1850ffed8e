"""Benchmarks, one module each: :mod:`.index` (indexing throughput), :mod:`.search` (FAISS search).
They print figures; they are not tests. Seeded data comes from :mod:`.data`."""
