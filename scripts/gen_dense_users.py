#!/usr/bin/env python3
"""Writes JSON-lines events of many users all active at once: the shape of issue 18's "a million
open sessions" (`sessionize generate` writes realistic sessions instead, few of them open at once).

EVENTS events spread evenly over MINUTES of event time, each of a user drawn uniformly from USERS
UUIDs, on one of eight pages. With the defaults (1M users, 2.66M events, 30 minutes) about 930k
users have a session open when the input ends.

Usage: scripts/gen_dense_users.py OUT [--users 1000000] [--events 2660000] [--minutes 30] [--seed 7]
"""

import argparse
import random
import uuid

PAGES = ["home", "search", "deals", "hotel", "checkout", "confirm", "account", "help"]
START_MS = 1772323200000  # 2026-03-01T00:00:00Z


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=2_660_000)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    users = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(args.users)]
    span_ms = args.minutes * 60_000 - 1
    with open(args.out, "w") as out:
        for i in range(args.events):
            time_ms = START_MS + i * span_ms // args.events
            out.write(
                '{"event_id":"e-%08x-%d","page_name":"%s","event_timestamp":%d,'
                '"booking_details":null,"uuid":"%s","event_details":{"event_name":"page_loaded",'
                '"event_type":"page_view","event_value":null}}\n'
                % (rng.getrandbits(32), i, rng.choice(PAGES), time_ms, rng.choice(users))
            )


if __name__ == "__main__":
    main()
