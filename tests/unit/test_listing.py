"""GET /system/functions' encoder (faasd/gateway/listing.py): the very documents FunctionStatus.to_json gives,
whatever is kept between listings."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

from faasd.gateway.listing import FunctionListing
from faasd.providers.types import FunctionSpec, FunctionStatus, Resources

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def statuses() -> list[FunctionStatus]:
    plain = FunctionSpec(name="plain", env_process="cat")
    rich = FunctionSpec(
        name="rich",
        image="ghcr.io/x/y:1",
        env_process='sh -c "echo \\"ü\\""',
        env_vars={"a": "1", "mode": "python"},
        constraints=("node.role==manager",),
        secrets=("s1",),
        labels={"com.openfaas.scale.min": "0", "emoji": "✓"},
        annotations={"topic": "a,b"},
        limits=Resources(memory="64m", cpu="0.5"),
        read_only_root_filesystem=True,
    )
    return [
        FunctionStatus(spec=plain, replicas=1, available_replicas=1, invocation_count=3.0, created_at=CREATED),
        FunctionStatus(spec=rich, replicas=0, created_at=None, state="failed", reason='restore failed: "x"'),
        FunctionStatus(spec=FunctionSpec(name="later", env_process="cat"), replicas=2, state="restoring"),
    ]


def test_a_listing_is_the_documents_of_to_json() -> None:
    listing = FunctionListing()
    first = statuses()
    assert json.loads(listing.encode(first)) == [status.to_json() for status in first]
    assert json.loads(listing.encode([])) == [] and len(listing) == 0


def test_kept_pieces_follow_what_moves_and_a_replaced_spec() -> None:
    listing = FunctionListing()
    first = statuses()
    listing.encode(first)
    assert len(listing) == 3
    # The same specs, with every moving field changed: the kept pieces must not freeze any of them.
    moved = [
        replace(first[0], replicas=4, available_replicas=2, invocation_count=99.0, state="failed", reason="r"),
        replace(first[1], replicas=1, available_replicas=1, state="deployed", reason=""),
        first[2],
    ]
    assert json.loads(listing.encode(moved)) == [status.to_json() for status in moved]
    # A new spec for a name (a deploy or an update) and a new creation time are encoded afresh.
    updated = [
        replace(first[0], spec=replace(first[0].spec, env_process="tac", labels={"v": "2"})),
        replace(first[1], created_at=CREATED),
    ]
    assert json.loads(listing.encode(updated)) == [status.to_json() for status in updated]
    assert len(listing) == 2  # "later" is no longer listed: its piece is gone
