"""`python app.py tokens add|list|revoke`: API tokens managed from the command line (DESIGN.md, "Access").

Tokens are made here rather than over HTTP so that the first admin needs no token to exist yet, and
so that a secret is printed once, to the person at the terminal, and is kept nowhere but as a hash.
"""
from __future__ import annotations

import argparse
import logging
import sys

import psycopg2

from config import Settings
from controllers import access
from db import Database, database_url_from, redact
from errors import AppError, Unavailable


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python app.py tokens", description="Manage Punctual's API tokens.")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="make a token and print its secret (once)")
    add.add_argument("name", help="who holds it; a desk token's name is the worker it claims as")
    add.add_argument("--scope", required=True, choices=access.SCOPES,
                     help="read: every GET; write: read + events; desk: read + manual events; admin: all")
    commands.add_parser("list", help="every token, active and revoked (no secrets: only hashes are kept)")
    revoke = commands.add_parser("revoke", help="refuse a token from its next request on, on every instance")
    revoke.add_argument("name")
    return parser


def tokens(argv: list[str], settings: Settings | None = None) -> int:
    """Run one tokens command against the configured database; 0 on success, 1 on a refusal, 2 on bad usage."""
    args = _parser().parse_args(argv)
    settings = settings or Settings.from_env()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    url = database_url_from(settings.database_url, settings.data_dir)
    db = Database(url, pool_size=1, application_name="punctual-tokens")
    try:
        db.apply_schema()
        if args.command == "add":
            secret = access.add_token(db, args.name, args.scope)
            print(f"token {args.name!r} (scope {args.scope}) added; its secret, shown this once:")
            print(secret)
        elif args.command == "list":
            rows = access.list_tokens(db)
            if not rows:
                print("no tokens" + (" (API_TOKEN is set: scope admin)" if settings.api_token else ""))
            for row in rows:
                state = f"revoked {row['revoked_at']:%Y-%m-%d %H:%M:%S}" if row["revoked_at"] else "active"
                print(f"{row['name']}\t{row['scope']}\tcreated {row['created_at']:%Y-%m-%d %H:%M:%S}\t{state}")
        else:
            if not access.revoke_token(db, args.name):
                print(f"no active token named {args.name!r}", file=sys.stderr)
                return 1
            print(f"token {args.name!r} revoked")
        return 0
    except AppError as exc:
        print(f"refused: {exc.message}", file=sys.stderr)
        return 1
    except (psycopg2.Error, Unavailable) as exc:
        print(f"cannot use the database {redact(url)}: {redact(str(exc.__cause__ or exc)).strip()}", file=sys.stderr)
        return 1
    finally:
        db.close()
