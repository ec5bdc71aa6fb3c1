"""One experiment at the small preset in this process; the last line says how many of its rows
are not ``ok`` and why (scripts/gpu_smoke.sh runs this for every experiment). Exit 1 if any."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from workbook import registry  # noqa: E402

rows = registry.execute(sys.argv[1], "small", 0, {})
bad = rows[rows["status"] != "ok"] if "status" in rows else rows.iloc[0:0]
why = bad["error"].dropna().astype(str).unique()[:2] if "error" in bad else []
print(f"{len(rows)} rows, {len(bad)} not ok" + "".join(f"; {w[:120]}" for w in why))
sys.exit(1 if len(bad) else 0)
