"""Print HA1 hashes for the daemon's ``registrar.users`` (passwords are never stored).

Usage: ``python -m sipd.daemon.ha1 USER REALM [--password PW]`` (asks for the
password when it is not given) prints a YAML entry with the SHA-256 and MD5
hashes of ``user:realm:password`` (RFC 7616 §3.4.2).
"""

from __future__ import annotations

import argparse
import getpass
import sys

from sipd import ha1_set

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("user")
    parser.add_argument("realm")
    parser.add_argument("--password", help="the password (asked for when omitted)")
    args = parser.parse_args(argv)
    password = args.password if args.password is not None else getpass.getpass("password: ")
    hashes = ha1_set(args.user, args.realm, password)
    sys.stdout.write(f"    {args.user}:\n")
    for algorithm, value in hashes.items():
        sys.stdout.write(f"      {algorithm}: {value}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
