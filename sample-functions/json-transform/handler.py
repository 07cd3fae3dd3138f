"""JSON transformer: upper-cases every string value, counts the keys, and adds a summary.

Input:  {"name": "faasd", "tags": ["fast", "small"], "nested": {"x": "y"}}
Output: {"data": {...upper-cased...}, "keys": 3, "strings": 4}
Malformed JSON: an error document on stdout and exit status 1 (the watchdog answers 500).
"""

import json
import sys


def transform(value, counter):
    if isinstance(value, str):
        counter["strings"] += 1
        return value.upper()
    if isinstance(value, list):
        return [transform(item, counter) for item in value]
    if isinstance(value, dict):
        return {key: transform(item, counter) for key, item in value.items()}
    return value


def main():
    raw = sys.stdin.read()
    try:
        document = json.loads(raw or "{}")
    except ValueError as exc:
        print(json.dumps({"error": f"invalid JSON: {exc}"}))
        return 1
    counter = {"strings": 0}
    result = {
        "data": transform(document, counter),
        "keys": len(document) if isinstance(document, dict) else 0,
        "strings": counter["strings"],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
