"""The index store: everything on disk for one collection, and the code that fills and reads it.

* :mod:`.index_store` — :class:`IndexStore` (SQLite items + FAISS generations, atomic commits).
* :mod:`.faiss_index` — FAISS factory strings, building, search parameters.
* :mod:`.sources` — listing a folder or a JSONL manifest.
* :mod:`.images` — robust image decoding.
* :mod:`.indexer` — incremental, resumable indexing.
* :mod:`.search` — :class:`Searcher`: a query embedded and looked up (the preselect stage's engine).
* :mod:`.fsutil` — atomic writes.
"""
