"""Wall time per SQL statement on one engine, to show where planning spends its time.

Measured from the driver's execute() to its return: complete for INSERT ... SELECT and UPDATE,
while for a SELECT on SQLite the rows fetched after the first one are not counted.
"""

from __future__ import annotations

import time
from collections import defaultdict

from sqlalchemy import Engine, event

KEY_CHARS = 70


class StatementTimer:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        entry = self.totals[" ".join(statement.split())[:KEY_CHARS]]
        entry[0] += 1
        entry[1] += time.perf_counter() - conn.info.pop("bench_started")

    def total_s(self) -> float:
        return sum(seconds for _, seconds in self.totals.values())

    def top(self, n: int = 3) -> list[dict]:
        ranked = sorted(self.totals.items(), key=lambda item: -item[1][1])[:n]
        return [
            {"sql": sql, "calls": int(calls), "seconds": round(seconds, 3)}
            for sql, (calls, seconds) in ranked
        ]
