"""Prints the shape of a warehouse's sessions table, as docs/PERFORMANCE.md records it: data files
and manifests of the current snapshot, metadata files and bytes under the table, and the time of a
full pyiceberg scan (best of three).

    python3 scripts/table_shape.py WAREHOUSE
"""
import json
import os
import sys
import time

from pyiceberg.catalog.sql import SqlCatalog


def main():
    root = os.path.abspath(sys.argv[1])
    catalog = SqlCatalog("default", uri=f"sqlite:///{root}/catalog.db", warehouse=f"file://{root}")
    table = catalog.load_table("sessions.user_sessions")
    current = table.current_snapshot()
    location = table.location().removeprefix("file://")
    files, size, metadata = 0, 0, 0
    for directory, _, names in os.walk(location):
        for name in names:
            size += os.path.getsize(os.path.join(directory, name))
            files += name.endswith(".parquet")
            metadata += name.endswith(".metadata.json")
    scans = []
    for _ in range(3):
        start = time.perf_counter()
        rows = len(table.scan().to_arrow())
        scans.append(time.perf_counter() - start)
    print(json.dumps({
        "rows": rows,
        "data_files_in_current_snapshot": int(current.summary["total-data-files"]),
        "manifests_in_current_snapshot": len(current.manifests(table.io)),
        "parquet_files_on_disk": files,
        "metadata_json_files": metadata,
        "bytes_under_table": size,
        "pyiceberg_full_scan_s": round(min(scans), 3),
    }))


if __name__ == "__main__":
    main()
