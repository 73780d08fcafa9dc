"""Ray job entrypoint for the nightly run: annotate the previous day's archives, then compact.

    python -m jobs.nightly --time-zone Europe/Berlin --out s3://annotations/nightly \\
        --config /etc/annotator/paper.yaml 's3://archive/calls/{day}/' 's3://archive/podcasts/{day}/'

``{day}`` in a source becomes the date before today (``YYYY-MM-DD``) in ``--time-zone``: the
zone the schedule is written in (the RayCronJob's ``timeZone``), not the container's clock,
which is UTC — at 01:00 in Berlin it is still the day before in UTC for the two summer hours'
difference, and ``date -d yesterday`` there would name the day before that. ``--day`` names a
day explicitly (rerunning a night). Compaction runs only after a successful annotate run; the
exit status is the annotate run's, else compaction's.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo


def previous_day(now: datetime, time_zone: str) -> date:
    """The calendar day before ``now`` (an aware datetime, any zone) in ``time_zone``."""
    return now.astimezone(ZoneInfo(time_zone)).date() - timedelta(days=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Annotate yesterday's archives, then compact.")
    parser.add_argument("sources", nargs="+", help="URIs; {day} becomes the day annotated")
    parser.add_argument("--out", required=True)
    parser.add_argument("--config", default=None)
    parser.add_argument("--time-zone", required=True, help="the schedule's zone (IANA name)")
    parser.add_argument("--day", type=date.fromisoformat, default=None, help="YYYY-MM-DD")
    args = parser.parse_args(argv)

    from annotator.cli import main as cli

    day = args.day or previous_day(datetime.now(UTC), args.time_zone)
    sources = [s.replace("{day}", day.isoformat()) for s in args.sources]
    print(f"nightly run for {day} ({args.time_zone}): {' '.join(sources)}", flush=True)
    config = ["--config", args.config] if args.config else []
    code = _command(cli, ["annotate", *sources, "--out", args.out, *config])
    return code or _command(cli, ["compact", args.out, *config])


def _command(cli, argv: list[str]) -> int:
    """An ``annotator`` command as the shell would run it: its exit status (its errors printed
    as one line by click)."""
    try:
        cli(argv)
    except SystemExit as exit:
        return int(exit.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
