"""Benchmark the audit log query: one filtered page of GET /events over a million events.

Fills a fresh PostgreSQL database (migrated) with N events for one workspace
(plus as many spread over other workspaces), mixed types, actors and targets,
all sealed but the newest few thousand, then times `services.events.list_events`
(the page and its total, counted up to EXACT_TOTAL_LIMIT) for each filter of
the API, several times each, and prints the total, whether it is exact, the
median and the worst.

    .venv/bin/python tests/perf/bench_events.py \
        --database-url postgresql+psycopg://postgres@127.0.0.1/authserver_bench_events \
        [--events 1000000] [--unsealed 3000]

Not a test: it prints figures, never asserts.
"""

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

WORKSPACE = "00000000-0000-4000-8000-000000000001"
# 80% grants, 19% denials, 1% changes.
TYPES = ["ACCESS_TOKEN_GRANT"] * 80 + ["ACCESS_TOKEN_DENY"] * 19 + ["TECHNICAL_USER_UPDATE"]

FILL = """
INSERT INTO audit_events (type, created_at, workspace_id, workspace_name, actor_id,
    actor_user_name, actor_technical, target_type, target_id, target_name, ip, user_agent,
    payload, chain_hash, chain_seq)
SELECT (ARRAY[{types}])[1 + mod(hashint4(n::int)::bigint + 2147483648, {ntypes})],
       :start + n * interval '10 milliseconds',
       CASE WHEN n % 2 = 0 THEN :workspace ELSE 'other-' || (n % 7) END,
       'bench', 'actor-' || (n % 200), 'actor@example.com', n % 3 = 0,
       'API_TOKEN', 'target-' || (n % 1000), 'target', '127.0.0.1', 'bench', '{{}}',
       CASE WHEN n <= :sealed THEN repeat('0', 64) END,
       CASE WHEN n <= :sealed THEN n END
FROM generate_series(1, :count) AS n
"""
# All but the newest events are filled as sealed (placeholder hashes: this database is for
# timing queries, not for `audit verify`); the newest --unsealed of the workspace are not,
# as a running server has a few seconds of events its sealer has not reached yet.
# The type comes from a hash of n, not from n itself: n picks the workspace (even n:
# the measured one), the actor and the target, and a type derived from n as well
# would be tied to them (every event of a target of one type, or of none).


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="an empty PostgreSQL database")
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the workspace")
    parser.add_argument(
        "--unsealed", type=int, default=3_000, help="newest events of the workspace not sealed"
    )
    parser.add_argument("--repeat", type=int, default=7)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    from authserver import create_app
    from authserver.cli import _upgrade_schema
    from authserver.extensions import db
    from authserver.services.audit import EventType
    from authserver.services.events import EventFilter, list_events

    app = create_app(
        {"DATABASE_URL": args.database_url, "KEYS_DIR": tempfile.mkdtemp(), "LOG_LEVEL": "ERROR"}
    )
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with app.app_context():
        _upgrade_schema()
        types = ", ".join(f"'{t}'" for t in TYPES)
        began = time.perf_counter()
        db.session.execute(
            text(FILL.format(types=types, ntypes=len(TYPES))),
            {
                "start": start,
                "workspace": WORKSPACE,
                "count": 2 * args.events,
                "sealed": 2 * (args.events - args.unsealed),
            },
        )
        db.session.commit()
        # What autovacuum does to an insert-only table soon after such a load (PostgreSQL
        # 13+): statistics, and the visibility map that lets a count read only the index.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE audit_events"))
        print(
            f"{2 * args.events:,} events written in {time.perf_counter() - began:.0f} s "
            f"({args.events:,} in the measured workspace, the newest {args.unsealed:,} unsealed)"
        )
        middle = start + timedelta(milliseconds=10 * args.events)
        filters = {
            "no filter": EventFilter(),
            "type=TECHNICAL_USER_UPDATE": EventFilter(type=EventType.TECHNICAL_USER_UPDATE),
            "type=ACCESS_TOKEN_GRANT": EventFilter(type=EventType.ACCESS_TOKEN_GRANT),
            "actorId": EventFilter(actor_id="actor-42"),
            "targetId": EventFilter(target_id="target-420"),
            "from/to (one hour)": EventFilter(
                created_from=middle, created_to=middle + timedelta(hours=1)
            ),
            "type + one-hour range": EventFilter(
                type=EventType.TECHNICAL_USER_UPDATE,
                created_from=middle,
                created_to=middle + timedelta(hours=1),
            ),
            "type + targetId": EventFilter(
                type=EventType.ACCESS_TOKEN_DENY, target_id="target-420"
            ),
        }
        runs = [(label, where, 0) for label, where in filters.items()]
        runs.append(("no filter, page 1001", EventFilter(), 30_000))
        print(
            f"{'filter':<28} {'total':>9} {'exact':>6} {'median ms':>10} {'worst ms':>9}"
            "   (size 30, page 1 unless said)"
        )
        for label, where, offset in runs:
            timings = []
            for _ in range(args.repeat):
                began = time.perf_counter()
                page = list_events(WORKSPACE, where, offset=offset, limit=30)
                timings.append((time.perf_counter() - began) * 1000)
                db.session.rollback()
            print(
                f"{label:<28} {page.total:>9,} {str(page.total_exact).lower():>6} "
                f"{statistics.median(timings):>10.1f} {max(timings):>9.1f}"
            )


if __name__ == "__main__":
    main()
