"""Python's xlsxwriter in constant-memory mode writing the bench's rows, for
`courier-bench` to compare Courier's XLSX renderer with.

    python xlsx_peer.py ROWS OUT_DIR PASSES

Builds the rows first (untimed), then writes ROWS rows to OUT_DIR/peer-N.xlsx PASSES times
and prints one JSON line: {"rows": ROWS, "seconds": [...each pass...], "bytes": size}.
"""

import json
import os
import sys
import time

import xlsxwriter

from rows import COLUMNS, row


def main():
    n, out_dir, passes = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    rows = [[r[c] for c in COLUMNS] for r in (row(i) for i in range(n))]
    seconds = []
    size = 0
    for p in range(passes):
        path = os.path.join(out_dir, f"peer-{p}.xlsx")
        t0 = time.perf_counter()
        wb = xlsxwriter.Workbook(path, {"constant_memory": True, "tmpdir": out_dir})
        ws = wb.add_worksheet()
        ws.write_row(0, 0, COLUMNS)
        for i, values in enumerate(rows, start=1):
            ws.write_row(i, 0, values)
        wb.close()
        seconds.append(time.perf_counter() - t0)
        size = os.path.getsize(path)
        os.remove(path)
    print(json.dumps({"rows": n, "seconds": seconds, "bytes": size}))


if __name__ == "__main__":
    main()
