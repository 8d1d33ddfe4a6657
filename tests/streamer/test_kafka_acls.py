"""The least-privilege ACL set is data: printed, documented and applied from one definition."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamer.kafka_acls import Principals, acl_table, kafka_acls_commands, least_privilege_acls
from streamer.schemas import Topics

REPO = Path(__file__).resolve().parents[2]


def grants(app_id: str = "motionguard", topics: Topics | None = None) -> set[tuple[str, str, str, str, str]]:
    return {
        (rule.principal, rule.resource_type, rule.pattern_type, rule.resource_name, operation)
        for rule in least_privilege_acls(app_id, topics or Topics())
        for operation in rule.operations
    }


def test_each_principal_gets_only_what_it_needs() -> None:
    got = grants()
    for principal in ("User:worker", "User:submitter", "User:moderation"):
        writes = {name for p, kind, _, name, op in got if p == principal and kind == "TOPIC" and op == "WRITE"}
        reads = {name for p, kind, _, name, op in got if p == principal and kind == "TOPIC" and op == "READ"}
        expected_writes, expected_reads = {
            "User:worker": (
                {"video-verdicts", "video-uploads-dlq", "motionguard-"},
                {"video-uploads", "moderator-labels", "video-verdicts", "motionguard-"},
            ),
            "User:submitter": ({"video-uploads"}, set()),
            "User:moderation": ({"moderator-labels"}, {"video-verdicts", "video-uploads-dlq"}),
        }[principal]
        assert (writes, reads) == (expected_writes, expected_reads), principal
    assert ("User:worker", "GROUP", "LITERAL", "motionguard", "READ") in got
    assert ("User:worker", "GROUP", "LITERAL", "motionguard-uploads", "READ") in got
    assert {op for *_, op in got} <= {"READ", "WRITE", "CREATE", "DESCRIBE"}  # never ALL, ALTER or DELETE
    assert not any(kind == "CLUSTER" for _, kind, *_ in got)


def test_topics_inside_the_workers_own_prefix_are_refused() -> None:
    # The worker may write every topic named <app id>-...: a main topic there would let it write uploads.
    with pytest.raises(ValueError, match="prefix of the worker's own topics"):
        least_privilege_acls("mg", Topics(uploads="mg-uploads"))


def test_the_table_and_the_commands_cover_every_rule() -> None:
    rules = least_privilege_acls("app", Topics(), Principals(worker="User:CN=w"))
    table = acl_table(rules).splitlines()
    assert len(table) == 2 + len(rules)
    assert "| `User:CN=w` | TOPIC | LITERAL | `video-uploads` | READ, DESCRIBE |" in table[2]
    commands = kafka_acls_commands(rules, "kafka:9093", "admin.properties")
    assert len(commands) == len(rules)
    assert commands[0] == (
        "kafka-acls.sh --bootstrap-server kafka:9093 --command-config admin.properties --add --allow-principal "
        "User:CN=w --operation Read --operation Describe --topic video-uploads --resource-pattern-type LITERAL"
    )


def test_the_documented_table_is_what_the_command_prints() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "streamer", "kafka", "acls"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert printed == acl_table(least_privilege_acls("motionguard", Topics()))
    assert printed in (REPO / "docs" / "kafka-security.md").read_text()
