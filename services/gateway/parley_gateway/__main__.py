"""`python -m parley_gateway` starts the gateway; `python -m parley_gateway hash-key` reads an
API key on stdin and prints the digest to put in PARLEY_API_KEYS instead of the key."""

import sys

from .auth import MAX_KEY_CHARS, MIN_KEY_CHARS, key_digest

USAGE = (
    "usage: python -m parley_gateway            start the gateway\n"
    "       python -m parley_gateway hash-key   print the sha256: digest of the API key read on stdin\n"
)


def hash_key() -> int:
    key = sys.stdin.read().strip()
    if not MIN_KEY_CHARS <= len(key) <= MAX_KEY_CHARS:
        sys.stderr.write(
            f"hash-key: give the API key on stdin (at least {MIN_KEY_CHARS} characters, at most {MAX_KEY_CHARS})\n"
        )
        return 2
    sys.stdout.write(key_digest(key) + "\n")
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if args == ["hash-key"]:
        raise SystemExit(hash_key())
    if args in (["-h"], ["--help"]):
        sys.stdout.write(USAGE)
        raise SystemExit(0)
    if args:
        sys.stderr.write(USAGE)
        raise SystemExit(2)
    from .app import main

    main()
