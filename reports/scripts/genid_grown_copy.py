"""Copy an index (same identity, so its identifier models still accept it) and point the copy at a
grown manifest, so that `viewfinder index GROWN --index COPY` adds only the new lines: the +10%
continuation of the generative-identifier issue, without touching the original index.

    python reports/scripts/genid_grown_copy.py SRC_INDEX DST_INDEX GROWN_MANIFEST
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from pathlib import Path


def main(src: Path, dst: Path, grown: Path) -> None:
    dst.mkdir(parents=True, exist_ok=False)
    for f in src.iterdir():
        if f.suffix == ".sqlite":  # a consistent snapshot, whatever the WAL holds
            with sqlite3.connect(f) as a, sqlite3.connect(dst / f.name) as b:
                a.backup(b)
        elif f.suffix in (".faiss", ".json"):
            shutil.copy2(f, dst / f.name)
    with sqlite3.connect(dst / "store.sqlite") as db:
        (raw,) = db.execute("select value from meta where key = 'manifest'").fetchone()
        manifest = json.loads(raw) | {"source": str(grown.resolve())}
        db.execute("update meta set value = ? where key = 'manifest'", (json.dumps(manifest),))
    on_disk = dst / "manifest.json"
    if on_disk.is_file():
        on_disk.write_text(json.dumps(json.loads(on_disk.read_text()) | {"source": str(grown.resolve())}, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
