"""``vlitc cache gc``: remove cache entries no recipe's last build uses."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    cache = sub.add_parser("cache", help="manage the cache")
    csub = cache.add_subparsers(dest="cache_command", required=True)
    gc = csub.add_parser("gc", help="remove entries no recipe's last build uses")
    gc.add_argument("--cache-dir", default=None)
    gc.add_argument("--all", action="store_true", help="remove every entry and object")
    gc.set_defaults(func=run_gc)


def run_gc(args: argparse.Namespace) -> int:
    from vlitc import cache_gc

    freed = cache_gc(args.cache_dir, everything=args.all)
    print(f"removed {freed['entries']} step entries, {freed['objects']} objects and "
          f"{freed['temp']} temp files ({freed['bytes'] / 1e6:.1f} MB)")
    return 0
