"""Greets the caller: reads the request body from stdin and the request's metadata from Http_* env."""

import os
import sys

body = sys.stdin.read()
name = body.strip() or "world"
method = os.environ.get("Http_Method", "?")
path = os.environ.get("Http_Path", "/")
query = os.environ.get("Http_Query", "")
agent = os.environ.get("Http_User_Agent", "unknown client")
print(f"Hello, {name}!")
print(f"You called {method} {path}{'?' + query if query else ''} with {agent}.")
