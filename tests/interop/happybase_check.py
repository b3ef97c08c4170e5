"""An ordinary HBase Thrift1 client (happybase) against histflow's
HBase-compatible server: puts, gets with timestamps and families, deletes
of columns, families and rows, and scans. Exits non-zero on any mismatch.

Usage: happybase_check.py PORT
"""
import sys

import happybase


def check(what, got, expected):
    if got != expected:
        print(f"FAILED {what}: got {got!r}, expected {expected!r}")
        sys.exit(1)


connection = happybase.Connection("127.0.0.1", int(sys.argv[1]))
connection.create_table("demo", {"r": dict(max_versions=3), "m": dict()})
check("tables", connection.tables(), [b"demo"])
table = connection.table("demo")
check("families", sorted(table.families()), [b"m", b"r"])

table.put(b"row1", {b"r:a": b"v20"}, timestamp=20)
table.put(b"row1", {b"r:a": b"v10"}, timestamp=10)
check("newest version", table.row(b"row1", include_timestamp=True), {b"r:a": (b"v20", 20)})
check("version before 20", table.row(b"row1", timestamp=20, include_timestamp=True), {b"r:a": (b"v10", 10)})

table.put(b"row2", {b"r:b": b"x", b"m:p": b"1"}, timestamp=5)
check("family filter", table.row(b"row2", columns=[b"r"]), {b"r:b": b"x"})
table.delete(b"row2", columns=[b"r:b"], timestamp=5)
check("column delete", table.row(b"row2"), {b"m:p": b"1"})

for i in range(5):
    table.put(f"scan{i}".encode(), {b"r:q": str(i).encode()})
check("prefix scan", [key for key, _ in table.scan(row_prefix=b"scan", batch_size=2)], [f"scan{i}".encode() for i in range(5)])
check("start/stop scan", [key for key, _ in table.scan(row_start=b"scan1", row_stop=b"scan3")], [b"scan1", b"scan2"])
check("rows", [key for key, _ in table.rows([b"row1", b"scan4"])], [b"row1", b"scan4"])

table.delete(b"row1")
check("row delete", table.row(b"row1"), {})
print("happybase: all checks passed")
